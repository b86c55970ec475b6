//! Iterative find_node / get_peers traversals.
