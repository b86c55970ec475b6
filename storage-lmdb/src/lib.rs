//! LMDB storage for magnetar. (Not yet implemented: see the issue tracker.)
