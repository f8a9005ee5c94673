//! The dice fleet integration suite: one test binary, so the suite links once
//! and every scenario shares the harness in `dice_tests` (`tests/src/`).
//! Each module is one topic; test names carry it as a prefix
//! (`cargo test -p dice-tests --test tests hostile::`).

mod acme;
mod authz;
mod bench;
mod certs;
mod compat;
mod config;
mod ctl;
mod discovery;
mod django;
mod fleet;
mod h2c;
mod harness;
mod health_listener;
mod hostile;
mod keys;
mod kubernetes;
mod live;
mod mtls;
mod nginx;
mod operate;
mod package;
mod python;
mod rate;
mod reload;
mod revocation;
mod rotate;
mod shutdown;
mod tls_material;
