//! Compiles the peer protocol (`proto/caddy/v1/peer.proto`) with a vendored protoc.
#[allow(unsafe_code)] // setting PROTOC for prost-build; build scripts are single-threaded
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=../../proto/caddy/v1/peer.proto");
    tonic_prost_build::configure().compile_protos(&["../../proto/caddy/v1/peer.proto"], &["../../proto"])?;
    Ok(())
}
