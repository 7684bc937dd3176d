//! Compiles `proto/` with protox, a pure-Rust protobuf compiler: no protoc needed. Only
//! with the `grpc` feature; without it the crate is names, ports and serde types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "grpc")]
    {
        let protos = [
            "../../proto/conduit/destination.proto",
            "../../proto/conduit/identity.proto",
            "../../proto/conduit/policy.proto",
            "../../proto/conduit/tap.proto",
        ];
        for p in protos {
            println!("cargo:rerun-if-changed={p}");
        }
        let fds = protox::compile(protos, ["../../proto"])?;
        tonic_prost_build::configure().compile_fds(fds)?;
    }
    Ok(())
}
