//! Rebuilds the crate when a migration file changes, so the embedded schema is never stale.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
