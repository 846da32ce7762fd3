use crate::errors::*;
use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPMethod as AmqpBasic;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::protocol::channel::AMQPMethod as AmqpChannel;
use amq_protocol::protocol::confirm::AMQPMethod as AmqpConfirm;
use amq_protocol::protocol::connection::AMQPMethod as AmqpConnection;
use amq_protocol::protocol::constants::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT};
use amq_protocol::protocol::exchange::AMQPMethod as AmqpExchange;
use amq_protocol::protocol::queue::AMQPMethod as AmqpQueue;
use amq_protocol::protocol::AMQPClass;
use cookie_factory::SerializeFn;
use std::ops::{Index, RangeFrom};

/// A short string of the codec from anything amiquip's API takes as a string: at most 255
/// bytes, or an error (the codec's own conversion panics on a longer one).
pub(crate) fn short<S: Into<String>>(s: S) -> Result<amq_protocol::types::ShortString> {
    let s = s.into();
    let length = s.len();
    amq_protocol::types::ShortString::try_new(s).map_err(|_| Error::ShortStringTooLong { length })
}

pub trait TryFromAmqpClass: Sized {
    fn try_from(class: AMQPClass) -> Result<Self>;
}

macro_rules! impl_try_from_class {
    ($type:ty, $class:path, $method:path) => {
        impl TryFromAmqpClass for $type {
            fn try_from(class: AMQPClass) -> Result<Self> {
                match class {
                    $class($method(val)) => Ok(val),
                    _ => FrameUnexpectedSnafu.fail(),
                }
            }
        }
    };
}

impl_try_from_class!(
    amq_protocol::protocol::connection::Start,
    AMQPClass::Connection,
    AmqpConnection::Start
);
impl_try_from_class!(
    amq_protocol::protocol::connection::Secure,
    AMQPClass::Connection,
    AmqpConnection::Secure
);
impl_try_from_class!(
    amq_protocol::protocol::connection::Tune,
    AMQPClass::Connection,
    AmqpConnection::Tune
);
impl_try_from_class!(
    amq_protocol::protocol::connection::OpenOk,
    AMQPClass::Connection,
    AmqpConnection::OpenOk
);
impl_try_from_class!(
    amq_protocol::protocol::connection::Close,
    AMQPClass::Connection,
    AmqpConnection::Close
);
impl_try_from_class!(
    amq_protocol::protocol::connection::CloseOk,
    AMQPClass::Connection,
    AmqpConnection::CloseOk
);

impl_try_from_class!(
    amq_protocol::protocol::channel::OpenOk,
    AMQPClass::Channel,
    AmqpChannel::OpenOk
);
impl_try_from_class!(
    amq_protocol::protocol::channel::CloseOk,
    AMQPClass::Channel,
    AmqpChannel::CloseOk
);

impl_try_from_class!(
    amq_protocol::protocol::basic::ConsumeOk,
    AMQPClass::Basic,
    AmqpBasic::ConsumeOk
);
impl_try_from_class!(
    amq_protocol::protocol::basic::CancelOk,
    AMQPClass::Basic,
    AmqpBasic::CancelOk
);
impl_try_from_class!(
    amq_protocol::protocol::basic::QosOk,
    AMQPClass::Basic,
    AmqpBasic::QosOk
);
impl_try_from_class!(
    amq_protocol::protocol::basic::RecoverOk,
    AMQPClass::Basic,
    AmqpBasic::RecoverOk
);

impl_try_from_class!(
    amq_protocol::protocol::confirm::SelectOk,
    AMQPClass::Confirm,
    AmqpConfirm::SelectOk
);

impl_try_from_class!(
    amq_protocol::protocol::queue::DeclareOk,
    AMQPClass::Queue,
    AmqpQueue::DeclareOk
);
impl_try_from_class!(
    amq_protocol::protocol::queue::BindOk,
    AMQPClass::Queue,
    AmqpQueue::BindOk
);
impl_try_from_class!(
    amq_protocol::protocol::queue::DeleteOk,
    AMQPClass::Queue,
    AmqpQueue::DeleteOk
);
impl_try_from_class!(
    amq_protocol::protocol::queue::PurgeOk,
    AMQPClass::Queue,
    AmqpQueue::PurgeOk
);
impl_try_from_class!(
    amq_protocol::protocol::queue::UnbindOk,
    AMQPClass::Queue,
    AmqpQueue::UnbindOk
);

impl_try_from_class!(
    amq_protocol::protocol::exchange::BindOk,
    AMQPClass::Exchange,
    AmqpExchange::BindOk
);
impl_try_from_class!(
    amq_protocol::protocol::exchange::DeclareOk,
    AMQPClass::Exchange,
    AmqpExchange::DeclareOk
);
impl_try_from_class!(
    amq_protocol::protocol::exchange::DeleteOk,
    AMQPClass::Exchange,
    AmqpExchange::DeleteOk
);
impl_try_from_class!(
    amq_protocol::protocol::exchange::UnbindOk,
    AMQPClass::Exchange,
    AmqpExchange::UnbindOk
);

pub(crate) trait TryFromAmqpFrame: Sized {
    fn try_from(channel_id: u16, frame: AMQPFrame) -> Result<Self>;
}

impl<T: TryFromAmqpClass> TryFromAmqpFrame for T {
    fn try_from(expected_id: u16, frame: AMQPFrame) -> Result<Self> {
        match frame {
            AMQPFrame::Method(channel_id, method) => {
                if expected_id == channel_id {
                    Self::try_from(method)
                } else {
                    FrameUnexpectedSnafu.fail()
                }
            }
            _ => FrameUnexpectedSnafu.fail(),
        }
    }
}

pub trait IntoAmqpClass {
    fn into_class(self) -> AMQPClass;
}

impl IntoAmqpClass for AmqpConnection {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Connection(self)
    }
}

impl IntoAmqpClass for AmqpBasic {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Basic(self)
    }
}

impl IntoAmqpClass for AmqpChannel {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Channel(self)
    }
}

impl IntoAmqpClass for AmqpConfirm {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Confirm(self)
    }
}

impl IntoAmqpClass for AmqpQueue {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Queue(self)
    }
}

impl IntoAmqpClass for AmqpExchange {
    fn into_class(self) -> AMQPClass {
        AMQPClass::Exchange(self)
    }
}

#[derive(Debug)]
pub(crate) struct OutputBuffer(Vec<u8>);

impl OutputBuffer {
    pub fn with_protocol_header() -> OutputBuffer {
        OutputBuffer(b"AMQP\x00\x00\x09\x01".to_vec())
    }

    pub(crate) fn empty() -> OutputBuffer {
        OutputBuffer(Vec::new())
    }

    pub(crate) fn drain_into_new_buf(&mut self) -> OutputBuffer {
        let mut buf = OutputBuffer(Vec::with_capacity(self.len()));
        buf.0.append(&mut self.0);
        buf
    }

    pub fn push_heartbeat(&mut self) {
        self.0.push(FRAME_HEARTBEAT);
        self.0.extend_from_slice(&[0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    // This can only fail if there is a bug in the serialization library; it is probably
    // safe to unwrap, but little cost to return a Result instead.
    pub fn push_method<M>(&mut self, channel_id: u16, method: M)
    where
        M: IntoAmqpClass,
    {
        let frame = AMQPFrame::Method(channel_id, method.into_class());
        serialize(&mut self.0, gen_frame(&frame))
    }

    pub(crate) fn push_content_header(
        &mut self,
        channel_id: u16,
        class_id: u16,
        length: usize,
        properties: &AMQPProperties,
    ) {
        // The frame's head, its size filled in once the properties are written.
        let start = self.0.len();
        self.0.push(FRAME_HEADER);
        self.0.extend_from_slice(&channel_id.to_be_bytes());
        self.0.extend_from_slice(&[0; 4]);
        self.0.extend_from_slice(&class_id.to_be_bytes());
        self.0.extend_from_slice(&0u16.to_be_bytes()); // weight
        self.0.extend_from_slice(&(length as u64).to_be_bytes());
        serialize(&mut self.0, gen_properties(properties));
        set_payload_size(&mut self.0, start);
        self.0.push(FRAME_END);
    }

    pub(crate) fn push_content_body(&mut self, channel_id: u16, content: &[u8]) {
        let start = self.0.len();
        self.0.reserve(8 + content.len());
        self.0.push(FRAME_BODY);
        self.0.extend_from_slice(&channel_id.to_be_bytes());
        self.0.extend_from_slice(&[0; 4]);
        self.0.extend_from_slice(content);
        set_payload_size(&mut self.0, start);
        self.0.push(FRAME_END);
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    pub fn clear(&mut self) {
        self.0.clear()
    }

    #[inline]
    pub fn drain_written(&mut self, n: usize) {
        self.0.drain(0..n);
    }

    #[inline]
    pub fn append(&mut self, mut other: OutputBuffer) {
        self.0.append(&mut other.0)
    }
}

impl Index<RangeFrom<usize>> for OutputBuffer {
    type Output = [u8];

    #[inline]
    fn index(&self, index: RangeFrom<usize>) -> &[u8] {
        &self.0[index]
    }
}

pub(super) struct SealableOutputBuffer {
    buf: OutputBuffer,
    sealed: bool,
}

impl SealableOutputBuffer {
    pub(super) fn new(buf: OutputBuffer) -> SealableOutputBuffer {
        SealableOutputBuffer { buf, sealed: false }
    }

    #[inline]
    pub(super) fn seal(&mut self) {
        self.sealed = true;
    }

    #[inline]
    pub(super) fn is_sealed(&self) -> bool {
        self.sealed
    }

    #[inline]
    pub(super) fn push_heartbeat(&mut self) {
        if !self.sealed {
            self.buf.push_heartbeat();
        }
    }

    #[inline]
    pub(super) fn push_method<M>(&mut self, channel_id: u16, method: M)
    where
        M: IntoAmqpClass,
    {
        if !self.sealed {
            self.buf.push_method(channel_id, method)
        }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(super) fn clear(&mut self) {
        self.buf.clear()
    }

    #[inline]
    pub(super) fn drain_written(&mut self, n: usize) {
        self.buf.drain_written(n)
    }

    #[inline]
    pub(super) fn append(&mut self, other: OutputBuffer) {
        if !self.sealed {
            self.buf.append(other)
        }
    }
}

impl Index<RangeFrom<usize>> for SealableOutputBuffer {
    type Output = [u8];

    #[inline]
    fn index(&self, index: RangeFrom<usize>) -> &[u8] {
        &self.buf[index]
    }
}

// Appends what `f` writes to `buf`. Writing to a Vec has no error of its own (it grows), and
// the codec's own errors are for values it cannot write, which amiquip does not build.
fn serialize<F: SerializeFn<Vec<u8>>>(buf: &mut Vec<u8>, f: F) {
    let start = buf.len();
    match f(WriteContext::from(std::mem::take(buf))) {
        Ok(ctx) => *buf = ctx.into_inner().0,
        Err(err) => unreachable!(
            "impossible serialization error at byte {}: {:?}",
            start, err
        ),
    }
}

// Fills in the payload size of the frame that starts at `start` and runs to the end of `buf`
// (whose frame-end octet is still to come): the bytes after the 7-byte frame head.
fn set_payload_size(buf: &mut [u8], start: usize) {
    let size = (buf.len() - start - 7) as u32;
    buf[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;

    fn parse(bytes: &[u8]) -> AMQPFrame {
        let (rest, frame) = parse_frame(bytes).expect("a frame");
        assert!(rest.is_empty(), "{} bytes left", rest.len());
        frame
    }

    #[test]
    fn content_frames_parse_back_as_written() {
        let properties = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_message_id("m-1".into());
        let mut buf = OutputBuffer::empty();
        buf.push_content_header(7, 60, 5, &properties);
        let header_len = buf.len();
        match parse(&buf.0) {
            AMQPFrame::Header(7, header) => {
                assert_eq!(header.class_id, 60);
                assert_eq!(header.body_size, 5);
                assert_eq!(header.properties, properties);
            }
            other => panic!("{:?}", other),
        }
        buf.push_content_body(7, b"hello");
        assert_eq!(
            parse(&buf.0[header_len..]),
            AMQPFrame::Body(7, b"hello".to_vec())
        );
    }

    #[test]
    fn a_short_string_over_255_bytes_is_an_error_not_a_panic() {
        assert_eq!(
            short("x".repeat(255)).map(|s| s.as_str().len()).ok(),
            Some(255)
        );
        assert!(matches!(
            short("x".repeat(256)),
            Err(Error::ShortStringTooLong { length: 256 })
        ));
    }

    #[test]
    fn a_heartbeat_is_eight_bytes() {
        let mut buf = OutputBuffer::empty();
        buf.push_heartbeat();
        assert_eq!(parse(&buf.0), AMQPFrame::Heartbeat);
        assert_eq!(buf.len(), 8);
    }

    #[test]
    fn a_method_parses_back() {
        let mut buf = OutputBuffer::empty();
        let ack = amq_protocol::protocol::basic::Ack {
            delivery_tag: 42,
            multiple: true,
        };
        buf.push_method(3, AmqpBasic::Ack(ack.clone()));
        assert_eq!(
            parse(&buf.0),
            AMQPFrame::Method(3, AMQPClass::Basic(AmqpBasic::Ack(ack)))
        );
    }
}
