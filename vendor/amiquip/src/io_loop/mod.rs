use crate::connection_options::ConnectionOptions;
use crate::errors::*;
use crate::frame_buffer::FrameBuffer;
use crate::serialize::{IntoAmqpClass, OutputBuffer, SealableOutputBuffer};
use crate::{
    Confirm, ConnectionBlockedNotification, ConnectionTuning, ConsumerMessage, FieldTable, Get,
    IoStream, Return, Sasl,
};
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::connection::TuneOk;
use amq_protocol::protocol::AMQPClass;
use crossbeam_channel::Receiver as CrossbeamReceiver;
use crossbeam_channel::SendError;
use crossbeam_channel::Sender as CrossbeamSender;
use crossbeam_channel::TryRecvError;
use log::{debug, error, trace, warn};
use mio::event::{Event, Source};
use mio::{Events, Interest, Poll, Token, Waker};
use snafu::ResultExt;
use std::collections::hash_map::HashMap;
use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::thread::{Builder, JoinHandle};
use std::time::{Duration, Instant};

mod channel_handle;
mod channel_slots;
mod connection_state;
mod content_collector;
mod doorbell;
mod handshake_state;
mod heartbeat_timers;
mod inner;
mod io_loop_handle;
mod mailbox;

pub(crate) use channel_handle::{AllocatedChannelHandle, Channel0Handle, ChannelHandle};
use channel_slots::{ChannelIds, ChannelSlots};
use connection_state::ConnectionState;
use content_collector::ContentCollector;
use doorbell::Doorbell;
use handshake_state::HandshakeState;
use heartbeat_timers::{HeartbeatKind, HeartbeatState, HeartbeatTimers};
use inner::Inner;
use io_loop_handle::{IoLoopHandle, IoLoopHandle0};
use mailbox::{Mailbox, Poster};

const STREAM: Token = Token(u16::MAX as usize + 1);
const WAKER: Token = Token(u16::MAX as usize + 2);
// Doorbell keys besides the channel ids (0..=u16::MAX) of the channels' own messages.
const ALLOC_CHANNEL: usize = u16::MAX as usize + 3;
const SET_BLOCKED_TX: usize = u16::MAX as usize + 4;

enum IoLoopMessage {
    Send(OutputBuffer),
    ConnectionClose(OutputBuffer),
    SetReturnHandler(Option<CrossbeamSender<Return>>),
    SetPubConfirmHandler(Option<CrossbeamSender<Confirm>>),
}

/// Calls a channel may have sent without waiting for their replies, at most (see
/// `IoLoopHandle::call_deferred`): each reply needs room in the channel's reply queue.
const MAX_DEFERRED: usize = 2;

enum ChannelMessage {
    Method(AMQPClass),
    ConsumeOk(String, CrossbeamReceiver<ConsumerMessage>),
    GetOk(Box<Option<Get>>),
}

struct ChannelSlot {
    rx: CrossbeamReceiver<IoLoopMessage>,
    tx: Poster<Result<ChannelMessage>>,
    collector: ContentCollector,
    consumers: HashMap<String, CrossbeamSender<ConsumerMessage>>,
    return_handler: Option<CrossbeamSender<Return>>,
    pub_confirm_handler: Option<CrossbeamSender<Confirm>>,
}

impl ChannelSlot {
    fn new(
        bell: &Doorbell,
        mio_channel_bound: usize,
        channel_id: u16,
    ) -> (ChannelSlot, IoLoopHandle) {
        let (mio_tx, mio_rx) = bell.channel(mio_channel_bound, usize::from(channel_id));

        // Bound of 2 is intentional here. The normal case for this channel is that it
        // will have at most 1 message in it (the response to a synchronous RPC call).
        // However, we might asynchronously receive a channel-close message from the
        // server, and there should be room to push that into this channel as well. If
        // we try to send to this channel and get blocked, we will exit the I/O loop
        // quickly as something has gone wrong internally; either a channel client has
        // tried to send 2 RPC synchronous calls without waiting for the answer to the
        // first, or the server has sent us multiple messages unrelated to RPC requests.
        // Either way, the connection is in a bad state - bail out. Calls whose replies are
        // taken later (`IoLoopHandle::call_deferred`) need room for theirs too.
        let (tx, rx) = mailbox::mailbox(2 + MAX_DEFERRED);

        let channel_slot = ChannelSlot {
            rx: mio_rx,
            tx,
            collector: ContentCollector::new(channel_id),
            consumers: HashMap::new(),
            return_handler: None,
            pub_confirm_handler: None,
        };

        let loop_handle = IoLoopHandle::new(channel_id, mio_tx, rx);

        (channel_slot, loop_handle)
    }
}

/// A request for a new channel's slot on the I/O thread.
enum AllocRequest {
    /// Made there, for this id or any free one; its handle comes back on `alloc_chan_rep`.
    Id(Option<u16>),
    /// Made by the caller for an id it took from the connection's `ChannelIds`: the thread
    /// only puts it in place, and nothing comes back. It is read before anything the new
    /// channel sends, since the doorbell's keys are read in the order they rang.
    Taken(u16, Box<ChannelSlot>),
}

/// Allocations in flight to the I/O thread at most: callers that take their ids themselves
/// do not wait for it.
const ALLOCATIONS_IN_FLIGHT: usize = 64;

struct Channel0Slot {
    common: ChannelSlot,
    set_blocked_rx: CrossbeamReceiver<CrossbeamSender<ConnectionBlockedNotification>>,
    blocked_tx: Option<CrossbeamSender<ConnectionBlockedNotification>>,
    alloc_chan_req_rx: CrossbeamReceiver<AllocRequest>,
    alloc_chan_rep_tx: Poster<Result<IoLoopHandle>>,
}

impl Channel0Slot {
    fn new(
        bell: &Doorbell,
        mio_channel_bound: usize,
        ids: Arc<ChannelIds>,
    ) -> (Channel0Slot, IoLoopHandle0) {
        let (common_slot, common_handle) = ChannelSlot::new(bell, mio_channel_bound, 0);
        let (alloc_chan_req_tx, alloc_chan_req_rx) =
            bell.channel(ALLOCATIONS_IN_FLIGHT, ALLOC_CHANNEL);
        let (set_blocked_tx, set_blocked_rx) = bell.channel(1, SET_BLOCKED_TX);
        let (alloc_chan_rep_tx, alloc_chan_rep_rx) = mailbox::mailbox(1);

        let slot = Channel0Slot {
            common: common_slot,
            set_blocked_rx,
            blocked_tx: None,
            alloc_chan_req_rx,
            alloc_chan_rep_tx,
        };
        let handle = IoLoopHandle0::new(
            common_handle,
            set_blocked_tx,
            alloc_chan_req_tx,
            alloc_chan_rep_rx,
            ChannelMaker {
                bell: bell.clone(),
                mio_channel_bound,
                ids,
            },
        );

        (slot, handle)
    }
}

/// What a connection's handle needs to make a channel's slot itself.
struct ChannelMaker {
    bell: Doorbell,
    mio_channel_bound: usize,
    ids: Arc<ChannelIds>,
}

pub(crate) struct IoLoop {
    poll: Poll,
    // The keys of what the doorbell rang for since the thread last looked.
    rung: CrossbeamReceiver<usize>,
    connection_timeout: Option<Duration>,
    frame_buffer: FrameBuffer,
    inner: Inner,

    // Bound for buffered outgoing writes. If we have more than this much data enqueued,
    // we will stop polling non-0 channels' requests for us to send more data.
    buffered_writes_high_water: usize,
    buffered_writes_low_water: usize,
}

impl IoLoop {
    pub(crate) fn new(tuning: ConnectionTuning) -> Result<Self> {
        let heartbeats = HeartbeatTimers::default();

        let poll = Poll::new().context(CreatePollHandleSnafu)?;
        let waker = Waker::new(poll.registry(), WAKER).context(RegisterWithPollHandleSnafu)?;
        let (bell, rung) = Doorbell::new(waker);

        Ok(IoLoop {
            poll,
            rung,
            frame_buffer: FrameBuffer::new(),
            inner: Inner::new(heartbeats, tuning.mem_channel_bound, bell),
            buffered_writes_high_water: tuning.buffered_writes_high_water,
            buffered_writes_low_water: tuning.buffered_writes_low_water,
            connection_timeout: None,
        })
    }

    pub(crate) fn start<Auth: Sasl, S: IoStream>(
        mut self,
        mut stream: S,
        mut options: ConnectionOptions<Auth>,
    ) -> Result<(JoinHandle<Result<()>>, FieldTable, Channel0Handle)> {
        self.poll
            .registry()
            .register(&mut stream, STREAM, Interest::WRITABLE)
            .context(RegisterWithPollHandleSnafu)?;

        self.connection_timeout = options.connection_timeout.take();
        let (handshake_done_tx, handshake_done_rx) = crossbeam_channel::bounded(1);
        let (ch0_slot, ch0_handle) = Channel0Slot::new(
            &self.inner.bell,
            self.inner.mio_channel_bound,
            self.inner.chan_slots.ids(),
        );

        let join_handle = Builder::new()
            .name("amiquip-io".to_string())
            .spawn(move || self.thread_main(stream, options, handshake_done_tx, ch0_slot, false))
            .context(ForkFailedSnafu)?;

        IoLoop::wait_for_amqp_handshake(ch0_handle, join_handle, handshake_done_rx)
    }

    fn wait_for_amqp_handshake(
        ch0_handle: IoLoopHandle0,
        join_handle: JoinHandle<Result<()>>,
        handshake_done_rx: CrossbeamReceiver<(usize, FieldTable)>,
    ) -> Result<(JoinHandle<Result<()>>, FieldTable, Channel0Handle)> {
        match handshake_done_rx.recv() {
            Ok((frame_max, server_properties)) => Ok((
                join_handle,
                server_properties,
                Channel0Handle::new(ch0_handle, frame_max),
            )),

            // If sender was dropped without sending, the I/O thread has failed; peel out
            // its final error.
            Err(_) => match join_handle.join() {
                Ok(Ok(())) => {
                    unreachable!("I/O thread ended successfully without completing handshake")
                }
                Ok(Err(err)) => Err(err),
                Err(_) => IoThreadPanicSnafu.fail(),
            },
        }
    }

    fn thread_main<Auth: Sasl, S: IoStream>(
        mut self,
        mut stream: S,
        options: ConnectionOptions<Auth>,
        handshake_done_tx: crossbeam_channel::Sender<(usize, FieldTable)>,
        ch0_slot: Channel0Slot,
        have_written_to_socket: bool,
    ) -> Result<()> {
        let (tune_ok, server_properties) =
            self.run_amqp_handshake(&mut stream, options, have_written_to_socket)?;
        // Before the connection's handle is let go: from then on it may take channel ids
        // itself (`allocate_channel_now`), which needs the negotiated maximum.
        self.inner.chan_slots.set_channel_max(tune_ok.channel_max);
        match handshake_done_tx.send((tune_ok.frame_max as usize, server_properties)) {
            Ok(_) => (),
            Err(_) => return Ok(()),
        }
        self.run_connection(&mut stream, ch0_slot)
    }

    fn run_amqp_handshake<Auth: Sasl, S: IoStream>(
        &mut self,
        stream: &mut S,
        options: ConnectionOptions<Auth>,
        have_written_to_socket: bool,
    ) -> Result<(TuneOk, FieldTable)> {
        let mut state = HandshakeState::Start(options);
        let result = self.run_io_loop(
            stream,
            &mut state,
            Self::handle_handshake_event,
            have_written_to_socket,
            Self::is_handshake_done,
        );
        match result {
            Ok(()) => (),
            Err(err) => {
                // If our credentials are bad, the socket is dropped without a message,
                // but we can detect that if we had gotten up to the Secure state before
                // failing.
                return match state {
                    HandshakeState::Secure(_, _) => InvalidCredentialsSnafu.fail(),
                    _ => Err(err),
                };
            }
        }
        self.connection_timeout = None;
        match state {
            HandshakeState::Start(_)
            | HandshakeState::Secure(_, _)
            | HandshakeState::Tune(_, _)
            | HandshakeState::Open(_, _) => unreachable!(),
            HandshakeState::Done(tune_ok, server_properties) => Ok((tune_ok, server_properties)),
            HandshakeState::ServerClosing(close) => ServerClosedConnectionSnafu {
                code: close.reply_code,
                message: close.reply_text,
            }
            .fail(),
        }
    }

    fn handle_handshake_event<Auth: Sasl, S: IoStream>(
        &mut self,
        stream: &mut S,
        state: &mut HandshakeState<Auth>,
        event: &Event,
    ) -> Result<()> {
        match event.token() {
            STREAM => {
                if writable(event) {
                    self.inner.write_to_stream(stream)?;
                }
                if readable(event) {
                    self.inner.read_from_stream(
                        stream,
                        &mut self.frame_buffer,
                        |inner, frame| state.process(inner, frame),
                    )?;
                }
            }
            // No channel handle exists before the handshake is done: nothing rings.
            WAKER => (),
            _ => unreachable!(),
        }
        Ok(())
    }

    fn is_handshake_done<Auth: Sasl>(&self, state: &HandshakeState<Auth>) -> bool {
        match state {
            HandshakeState::Start(_)
            | HandshakeState::Secure(_, _)
            | HandshakeState::Tune(_, _)
            | HandshakeState::Open(_, _) => false,
            HandshakeState::Done(_, _) => true,
            HandshakeState::ServerClosing(_) => {
                // server initiated a close (e.g., bad vhost). don't report that we're
                // done until all our writes have gone out
                assert!(
                    self.inner.are_writes_sealed(),
                    "writes should be sealed after getting a server close request"
                );
                !self.inner.has_data_to_write()
            }
        }
    }

    fn run_connection<S: IoStream>(
        &mut self,
        stream: &mut S,
        ch0_slot: Channel0Slot,
    ) -> Result<()> {
        let mut state = ConnectionState::Steady(ch0_slot);
        self.run_io_loop(
            stream,
            &mut state,
            Self::handle_steady_event,
            true,
            Self::is_connection_done,
        )?;
        match state {
            ConnectionState::Steady(_) => unreachable!(),
            ConnectionState::ServerClosing(close) => ServerClosedConnectionSnafu {
                code: close.reply_code,
                message: close.reply_text,
            }
            .fail(),
            ConnectionState::ClientException => ClientExceptionSnafu.fail(),
            ConnectionState::ClientClosed => Ok(()),
        }
    }

    fn handle_steady_event<S: IoStream>(
        &mut self,
        stream: &mut S,
        state: &mut ConnectionState,
        event: &Event,
    ) -> Result<()> {
        match event.token() {
            STREAM => {
                if writable(event) {
                    self.inner.write_to_stream(stream)?;
                }
                if readable(event) {
                    self.inner.read_from_stream(
                        stream,
                        &mut self.frame_buffer,
                        |inner, frame| state.process(inner, frame),
                    )?;
                }
            }
            WAKER => self.answer_doorbell(state)?,
            _ => unreachable!(),
        }
        Ok(())
    }

    // Reads the messages of every sender that rang since the last time.
    fn answer_doorbell(&mut self, state: &mut ConnectionState) -> Result<()> {
        self.inner.bell.answer();
        while let Ok(key) = self.rung.try_recv() {
            let ch0_slot = match state {
                ConnectionState::Steady(ch0_slot) => ch0_slot,
                // The channel 0 slot is gone: nobody is left to answer, and the loop ends
                // once its last writes are out.
                ConnectionState::ServerClosing(_)
                | ConnectionState::ClientException
                | ConnectionState::ClientClosed => continue,
            };
            match key {
                SET_BLOCKED_TX => self.handle_set_blocked_tx(ch0_slot)?,
                ALLOC_CHANNEL => self.inner.allocate_channel(ch0_slot)?,
                0 => self.inner.handle_channel0_readable(ch0_slot)?,
                n => self.inner.channel_rang(n as u16)?,
            }
        }
        Ok(())
    }

    fn handle_set_blocked_tx(&self, ch0_slot: &mut Channel0Slot) -> Result<()> {
        loop {
            let tx = match ch0_slot.set_blocked_rx.try_recv() {
                Ok(tx) => tx,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return EventLoopClientDroppedSnafu.fail(),
            };
            ch0_slot.blocked_tx = Some(tx);
        }
    }

    fn is_connection_done(&self, state: &ConnectionState) -> bool {
        match state {
            ConnectionState::Steady(_) => false,
            ConnectionState::ClientClosed => true,
            ConnectionState::ServerClosing(_) | ConnectionState::ClientException => {
                // we're mid-close, but not actually done until all our writes have gone out
                assert!(
                    self.inner.are_writes_sealed(),
                    "writes should be sealed after getting a server close request"
                );
                !self.inner.has_data_to_write()
            }
        }
    }

    fn run_io_loop<State, S, F, G>(
        &mut self,
        stream: &mut S,
        state: &mut State,
        mut handle_event: F,
        mut have_written_to_socket: bool,
        is_done: G,
    ) -> Result<()>
    where
        S: Source,
        F: FnMut(&mut Self, &mut S, &mut State, &Event) -> Result<()>,
        G: Fn(&Self, &State) -> bool,
    {
        // Since we're called multiple times (to run TLS handshake, then AMQP handshake,
        // then main loop), we don't know whether the socket is registered for RW or just
        // R at entry. Check and see if we have any outgoing data to send (e.g., done
        // with TLS handshake and need to send the AMQP protocol header), and reregister
        // for RW if so.
        //
        // HOWEVER - on Windows, it's important not to reregister for readable until we've
        // written some data on the socket; otherwise we can get spurious readable wakeups
        // which lead to a NotConnected error when we try to actually read. have_written_to_socket
        // lets us track this. In the TLS case, this should be false if we're just starting
        // the TLS handshake and true otherwise; in the non-TLS case, this should be true
        // if we've sent the protocol header and false otherwise. I think this is related to
        // https://github.com/tokio-rs/mio/issues/648.
        if self.inner.has_data_to_write() && have_written_to_socket {
            trace!("reregistering socket for readable or writable");
            self.poll
                .registry()
                .reregister(stream, STREAM, Interest::READABLE | Interest::WRITABLE)
                .context(RegisterWithPollHandleSnafu)?;
        }

        let mut events = Events::with_capacity(128);
        let mut listening_to_channels = true;
        let mut last_event = Instant::now();
        loop {
            // Until the next event, or the nearest heartbeat deadline, or the end of the
            // connection timeout.
            let now = Instant::now();
            let mut timeout = self
                .inner
                .heartbeats
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(now));
            if let Some(limit) = self.connection_timeout {
                let left = limit.saturating_sub(now.saturating_duration_since(last_event));
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => (),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err).context(FailedToPollSnafu),
            }
            self.inner.process_heartbeat_timers(Instant::now())?;
            if events.is_empty() {
                if let Some(timeout) = &self.connection_timeout {
                    if last_event.elapsed() >= *timeout {
                        return ConnectionTimeoutSnafu.fail();
                    }
                }
                // A heartbeat may have just been queued: it is written below.
                if !self.inner.has_data_to_write() {
                    continue;
                }
            } else {
                last_event = Instant::now();
            }

            let had_data_to_write = self.inner.has_data_to_write();

            for event in events.iter() {
                handle_event(self, stream, state, event)?;
            }

            if is_done(self, state) {
                return Ok(());
            }

            // Avoid out-of-memory from very fast publishers. If we have more than
            // buffered_writes_high_water data enqueued to write already, unregister all
            // channels (other than channel 0), and don't reregister until we're down to
            // buffered_writes_low_water.
            if listening_to_channels && self.inner.outbuf.len() > self.buffered_writes_high_water {
                debug!("passed high water mark for buffered writes; blocking channels internally",);
                self.inner.pause_channels();
                listening_to_channels = false;
            } else if !listening_to_channels
                && self.inner.outbuf.len() <= self.buffered_writes_low_water
            {
                debug!("returned below low water mark for buffered writes; resuming channels",);
                self.inner.resume_channels()?;
                listening_to_channels = true;
            }

            // If we have data to write, reregister for readable|writable. This may be a
            // spurious reregistration, but also may not - if we wrote all the data we have
            // but didn't get a WouldBlock, and then later in the processing loop added
            // more data to write but didn't write it, mio won't wake us back up again next
            // pass unless we reregister.
            //
            // If we don't have data to write, only reregister for readable (without
            // writable) if we had data to write after the last poll; otherwise we know
            // we were already registered as readable only and don't need to rereg.
            if self.inner.has_data_to_write() && have_written_to_socket {
                trace!("reregistering socket for readable or writable");
                self.poll
                    .registry()
                    .reregister(stream, STREAM, Interest::READABLE | Interest::WRITABLE)
                    .context(RegisterWithPollHandleSnafu)?;
            } else if had_data_to_write {
                trace!("reregistering socket for readable only");
                have_written_to_socket = true;
                self.poll
                    .registry()
                    .reregister(stream, STREAM, Interest::READABLE)
                    .context(RegisterWithPollHandleSnafu)?;
            }
        }
    }
}

// Readiness as the socket's handlers need it: a hang-up or an error is read (or written), and
// the read or write then reports it.
fn readable(event: &Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

fn writable(event: &Event) -> bool {
    event.is_writable() || event.is_write_closed() || event.is_error()
}
