//! gantry-server: the reference HTTP server that a `GoServer` deploys.
