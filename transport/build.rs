//! Generates the `RaftTransport` gRPC client and server from `proto/transportpb.proto`. The
//! messages it carries come from tessera-proto (mapped with `extern_path`), so only the
//! service code and its tiny `Done` message are generated here, and tessera-proto stays free
//! of tonic. `protoc` comes from the `protoc-bin-vendored` crate, never from the machine.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available");
    // prost-build (under tonic-prost-build) looks for protoc through this variable.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/transportpb.proto");
    println!("cargo:rerun-if-changed=../proto/proto/serverpb.proto");
    tonic_prost_build::configure()
        .extern_path(".raftpb", "::tessera_proto::raftpb")
        .extern_path(".storepb", "::tessera_proto::storepb")
        .extern_path(".serverpb", "::tessera_proto::serverpb")
        // Our codec is prost's plus a count of what fails to decode, so that malformed input
        // shows in metrics at the one place where it is detected.
        .codec_path("crate::codec::MeteredCodec")
        .compile_protos(&["proto/transportpb.proto"], &["proto", "../proto/proto"])
        .expect("the transport's .proto compiles");
}
