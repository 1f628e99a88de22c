//! Compiles the `.proto` files with prost. `protoc` comes from the `protoc-bin-vendored`
//! crate, never from the machine, so a fresh checkout builds with `cargo` alone.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available");
    // prost-build looks for protoc through this variable.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/raftpb.proto");
    println!("cargo:rerun-if-changed=proto/storepb.proto");
    println!("cargo:rerun-if-changed=proto/serverpb.proto");
    println!("cargo:rerun-if-changed=proto/kvpb.proto");
    prost_build::Config::new()
        // Entry payloads are cloned at every step of their way (to the Ready, into storage,
        // into each follower's append, into the apply batch). Reference-counted bytes make
        // those clones O(1) instead of a copy of the payload each.
        .bytes([
            ".raftpb.Entry.data",
            ".raftpb.Snapshot.data",
            ".serverpb.SnapshotChunk.data",
            ".serverpb.Request.value",
        ])
        // Nearly every message carries no snapshot; boxing it keeps Message small, and
        // messages are moved many times between the core, the Ready and the transport.
        .boxed(".raftpb.Message.snapshot")
        // The same for the Ready, which holds a snapshot inline and moves on every call.
        .boxed(".raftpb.Snapshot.metadata")
        .compile_protos(
            &["proto/raftpb.proto", "proto/storepb.proto", "proto/serverpb.proto", "proto/kvpb.proto"],
            &["proto"],
        )
        .expect("the .proto files compile");
}
