//! A write's frames: each delivery formatted as its SSE frame the moment it arrives, into one
//! buffer, beside what the window needs of it afterwards (its tag, where its frame ends).
//!
//! Nothing else of a delivery is kept: its body, properties, exchange and routing key (several
//! allocations, about 400 bytes beside the body) are freed as it arrives. A stream gathering a
//! resume's redeliveries, and every stream at once when a broker restart hands each its held
//! messages back, holds one growing buffer instead of a few small allocations per message: the
//! allocator cannot give back memory where a long-lived allocation landed among such short-lived
//! ones, and a burst of them left the server megabytes larger for good.

use crate::http::sse;
use crate::stream::event_id;
use amiquip::Delivery;

/// Bytes reserved for a frame beyond its body (`id:` with an event id, `event:`, field names,
/// newlines): an estimate; a body of many lines takes more.
const FRAME_OVERHEAD: usize = 96;

/// Which fields frames carry.
#[derive(Debug, Clone, Copy)]
pub struct Form {
    /// `id:` (see `event_id`).
    pub event_ids: bool,
    /// `event:` from the AMQP `type`.
    pub event_types: bool,
}

/// One delivery's frame in `Frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub tag: u64,
    pub redelivered: bool,
    /// Where the frame ends in the buffer (it starts where the one before ends).
    end: usize,
    /// The length of its event id, which starts its frame; 0 when it has none.
    id_len: u16,
}

/// Frames in the order they are to be written.
#[derive(Debug, Default)]
pub struct Frames {
    bytes: Vec<u8>,
    frames: Vec<Frame>,
}

impl Frames {
    pub fn new() -> Frames {
        Frames::default()
    }

    /// Formats `delivery` as the next frame; the delivery is freed here.
    // Deliveries arrive boxed (vendor/amiquip/CHANGED.md); taken by value, the box is freed here.
    #[allow(clippy::boxed_local)]
    pub fn push(&mut self, delivery: Box<Delivery>, form: Form) {
        let id = form
            .event_ids
            .then(|| event_id::of(&delivery.body, &delivery.properties));
        let kind = if form.event_types {
            delivery.properties.kind().as_ref().map(|s| s.as_str())
        } else {
            None
        };
        let event = sse::Event {
            id: id.as_ref().map(event_id::EventId::as_str),
            event: kind,
            data: &delivery.body,
        };
        self.push_event(delivery.delivery_tag(), delivery.redelivered, &event);
    }

    /// Formats `event`, delivered with `tag`, as the next frame.
    pub fn push_event(&mut self, tag: u64, redelivered: bool, event: &sse::Event<'_>) {
        self.bytes.reserve(event.data.len() + FRAME_OVERHEAD);
        sse::push_event(&mut self.bytes, event);
        // An id is written without line breaks (`sse`); those of `event_id::of` have none. One
        // that could not be read back as it was given gets no length: it is never taken for a
        // client's last event, so nothing is skipped on its account.
        let id_len = event
            .id
            .filter(|id| !id.contains(['\r', '\n']))
            .and_then(|id| u16::try_from(id.len()).ok())
            .unwrap_or(0);
        self.frames.push(Frame {
            tag,
            redelivered,
            end: self.bytes.len(),
            id_len,
        });
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frame at `index`.
    pub fn frame(&self, index: usize) -> Frame {
        self.frames[index]
    }

    /// The event id of the frame at `index`, if it has one.
    pub fn id(&self, index: usize) -> Option<&str> {
        let frame = self.frames[index];
        if frame.id_len == 0 {
            return None;
        }
        let start = self.start(index) + sse::ID_FIELD.len();
        let id = self.bytes.get(start..start + usize::from(frame.id_len))?;
        std::str::from_utf8(id).ok()
    }

    /// The bytes of the frame at `index`.
    pub fn frame_bytes(&self, index: usize) -> &[u8] {
        &self.bytes[self.start(index)..self.frames[index].end]
    }

    /// The bytes the buffer holds room for: after a resume, also those of the frames cut off.
    pub fn allocated(&self) -> usize {
        self.bytes.capacity()
    }

    /// Every frame's bytes, in order: what one write sends.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each frame's tag, the offset its frame ends at in `bytes`, and the frame's size.
    pub fn ends(&self) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        (0..self.frames.len()).map(|index| {
            let frame = self.frames[index];
            (frame.tag, frame.end, self.size(index))
        })
    }

    /// The frames at `order`, in that order. Those that keep their order after a dropped first
    /// part (what a resume usually leaves) stay in this buffer; others are copied.
    pub fn select(mut self, order: &[usize]) -> Frames {
        let first = order.first().copied().unwrap_or(self.frames.len());
        if order.iter().copied().eq(first..self.frames.len()) {
            let cut = self.start(first);
            self.bytes.drain(..cut);
            self.frames.drain(..first);
            for frame in &mut self.frames {
                frame.end -= cut;
            }
            return self;
        }
        let mut chosen = Frames {
            bytes: Vec::with_capacity(order.iter().map(|&i| self.size(i)).sum()),
            frames: Vec::with_capacity(order.len()),
        };
        for &index in order {
            let frame = self.frames[index];
            chosen
                .bytes
                .extend_from_slice(&self.bytes[self.start(index)..frame.end]);
            chosen.frames.push(Frame {
                end: chosen.bytes.len(),
                ..frame
            });
        }
        chosen
    }

    fn start(&self, index: usize) -> usize {
        index
            .checked_sub(1)
            .map_or(0, |before| self.frames[before].end)
    }

    fn size(&self, index: usize) -> usize {
        self.frames[index].end - self.start(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(id: Option<&'a str>, data: &'a str) -> sse::Event<'a> {
        sse::Event {
            id,
            event: None,
            data: data.as_bytes(),
        }
    }

    fn three() -> Frames {
        let mut frames = Frames::new();
        frames.push_event(7, true, &event(Some("a1"), "one"));
        frames.push_event(8, false, &event(Some("b22"), "two\nlines"));
        frames.push_event(9, false, &event(None, "three"));
        frames
    }

    #[test]
    fn frames_are_written_in_order_with_where_each_ends() {
        let frames = three();
        let text = std::str::from_utf8(frames.bytes()).unwrap();
        assert_eq!(
            text,
            "id: a1\ndata: one\n\nid: b22\ndata: two\ndata: lines\n\ndata: three\n\n"
        );
        let ends: Vec<_> = frames.ends().collect();
        assert_eq!(ends, [(7, 18, 18), (8, 49, 31), (9, 62, 13)]);
        assert!(frames.frame(0).redelivered && !frames.frame(1).redelivered);
    }

    #[test]
    fn each_frame_knows_its_event_id() {
        let frames = three();
        assert_eq!(frames.id(0), Some("a1"));
        assert_eq!(frames.id(1), Some("b22"));
        assert_eq!(frames.id(2), None);
    }

    #[test]
    fn selecting_a_tail_keeps_the_buffer_and_moves_the_ends() {
        let selected = three().select(&[1, 2]);
        assert_eq!(
            std::str::from_utf8(selected.bytes()).unwrap(),
            "id: b22\ndata: two\ndata: lines\n\ndata: three\n\n"
        );
        let ends: Vec<_> = selected.ends().collect();
        assert_eq!(ends, [(8, 31, 31), (9, 44, 13)]);
        assert_eq!(selected.id(0), Some("b22"));
    }

    #[test]
    fn selecting_another_order_copies_the_frames_in_it() {
        let selected = three().select(&[2, 0]);
        assert_eq!(
            std::str::from_utf8(selected.bytes()).unwrap(),
            "data: three\n\nid: a1\ndata: one\n\n"
        );
        let ends: Vec<_> = selected.ends().collect();
        assert_eq!(ends, [(9, 13, 13), (7, 31, 18)]);
        assert_eq!(selected.id(1), Some("a1"));
    }

    #[test]
    fn an_id_that_was_written_otherwise_is_never_read_back() {
        let mut frames = Frames::new();
        frames.push_event(1, true, &event(Some("a\nb"), "x"));
        assert_eq!(frames.id(0), None);
        let long = "i".repeat(70_000);
        frames.push_event(2, true, &event(Some(&long), "x"));
        assert_eq!(frames.id(1), None);
    }

    #[test]
    fn selecting_nothing_leaves_nothing_to_write() {
        let selected = three().select(&[]);
        assert!(selected.is_empty());
        assert!(selected.bytes().is_empty());
    }
}
