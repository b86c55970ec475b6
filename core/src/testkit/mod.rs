//! Test helpers shared by core's tests and the simulator (feature `testkit`):
//! sans-IO fake peers that serve metadata honestly or in hostile ways.
