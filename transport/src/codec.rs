//! The codec of the generated service: prost's encoding, and a decoder that counts what
//! fails to decode before refusing it. Decoding is the one place where malformed input is
//! told apart from a broken connection (both would otherwise reach the handler as an
//! `INTERNAL` status), so that is where it is counted.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::metrics::{count_rejected, Rejection};

/// Named by `build.rs` as the codec of every RPC of the service.
#[derive(Debug)]
pub struct MeteredCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for MeteredCodec<T, U> {
    fn default() -> Self {
        MeteredCodec { _types: PhantomData }
    }
}

impl<T, U> Codec for MeteredCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MeteredDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MeteredDecoder { _type: PhantomData }
    }
}

/// Decodes one `U` with prost; a failure is counted and becomes `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct MeteredDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for MeteredDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        match U::decode(buf) {
            Ok(item) => Ok(Some(item)),
            Err(error) => {
                count_rejected(Rejection::Malformed);
                Err(Status::invalid_argument(format!("malformed message: {error}")))
            }
        }
    }
}
