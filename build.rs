//! Generates the gRPC client of the bench tool's etcd target from
//! `src/bench/etcdserverpb.proto`. Only a client is generated: Tessera never serves etcd's
//! API. `protoc` comes from the `protoc-bin-vendored` crate, never from the machine, as in
//! the other crates' build scripts.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available");
    // prost-build (under tonic-prost-build) looks for protoc through this variable.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=src/bench/etcdserverpb.proto");
    tonic_prost_build::configure()
        .build_server(false)
        // Keys and values as `Bytes`: every client puts the same value buffer, and a clone of
        // `Bytes` shares it instead of copying it once per request.
        .bytes(".etcdserverpb")
        .compile_protos(&["src/bench/etcdserverpb.proto"], &["src/bench"])
        .expect("the etcd client's .proto compiles");
}
