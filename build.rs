//! Generates the gRPC code of the tessera package: the client of the bench tool's etcd
//! target from `src/bench/etcdserverpb.proto`, and the client and server of the node's KV
//! service from `src/kv/kvservicepb.proto`, whose messages come from tessera-proto (mapped
//! with `extern_path`, so that tessera-proto stays free of tonic). `protoc` comes from the
//! `protoc-bin-vendored` crate, never from the machine, as in the other crates' build scripts.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available");
    // prost-build (under tonic-prost-build) looks for protoc through this variable.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=src/bench/etcdserverpb.proto");
    println!("cargo:rerun-if-changed=src/kv/kvservicepb.proto");
    println!("cargo:rerun-if-changed=proto/proto/kvpb.proto");
    // Only a client is generated: Tessera never serves etcd's API.
    tonic_prost_build::configure()
        .build_server(false)
        // Keys and values as `Bytes`: every client puts the same value buffer, and a clone of
        // `Bytes` shares it instead of copying it once per request.
        .bytes(".etcdserverpb")
        .compile_protos(&["src/bench/etcdserverpb.proto"], &["src/bench"])
        .expect("the etcd client's .proto compiles");
    tonic_prost_build::configure()
        .extern_path(".kvpb", "::tessera_proto::kvpb")
        .extern_path(".storepb", "::tessera_proto::storepb")
        .extern_path(".raftpb", "::tessera_proto::raftpb")
        .compile_protos(&["src/kv/kvservicepb.proto"], &["src/kv", "proto/proto"])
        .expect("the KV service's .proto compiles");
}
