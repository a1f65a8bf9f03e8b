//! Replaying a capture through the loaded program: reading pcap and pcapng files,
//! turning each captured packet into the Ethernet frame a NIC would have handed the XDP
//! program, and judging it with BPF_PROG_TEST_RUN.
//!
//! The program returns only an XDP action. The reason comes from its counters: every
//! run of the program counts exactly one `packets[reason][method]` cell (`count` in
//! sip-filter-ebpf/src/main.rs is its only writer and runs once per packet), so the
//! cell that grew by one between two reads is this packet's reason and method. A TCP
//! segment counts one cell per message it holds (issue 14): its verdict is then its
//! drop, if any message was dropped.

use std::{
    fs::File,
    io::{BufReader, Chain, Cursor, ErrorKind, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketOption,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        Block, PcapNgReader,
    },
    DataLink, PcapError, TsResolution,
};
use sip_filter_common::{
    maps::{AnswerKind, BanReason, Transport, BAN_SLOTS, MAX_STREAM_MESSAGES},
    Counters, Method, Reason,
};

use crate::{filter::FilterError, Filter};

/// Why a captured packet was not run through the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Captured shorter than it was on the wire (a snap length): the kernel would have
    /// judged the whole packet, so judging the cut one would tell something else.
    Truncated { captured: u32, original: u32 },
    /// Sent by the capturing host (a cooked capture's or pcapng's direction says so)
    /// while learning from answers is off: XDP sees only what arrives.
    Outgoing,
    /// A link type replay cannot turn into Ethernet.
    UnsupportedLink(u32),
    /// Shorter than its link-layer header, or than an Ethernet header.
    TooShort,
    /// Longer than BPF_PROG_TEST_RUN takes for an XDP program without fragments
    /// support (about a page); such frames never reach XDP on a 1500-byte MTU.
    TooLarge(usize),
}

impl Skip {
    /// The name used in the output.
    pub fn name(self) -> &'static str {
        match self {
            Skip::Truncated { .. } => "truncated",
            Skip::Outgoing => "outgoing",
            Skip::UnsupportedLink(_) => "unsupported_link_type",
            Skip::TooShort => "too_short",
            Skip::TooLarge(_) => "too_large",
        }
    }

    pub const ALL_NAMES: [&'static str; 5] = [
        "truncated",
        "outgoing",
        "unsupported_link_type",
        "too_short",
        "too_large",
    ];

    /// What it means, for a person.
    pub fn detail(self) -> String {
        match self {
            Skip::Truncated { captured, original } => format!(
                "captured {captured} of {original} bytes (capture with a larger snap length, tcpdump -s 0)"
            ),
            Skip::Outgoing => "sent by the capturing host; XDP sees only arriving packets, and learning from answers is off".into(),
            Skip::UnsupportedLink(link) => format!("link type {link} is not supported"),
            Skip::TooShort => "shorter than its link-layer header".into(),
            Skip::TooLarge(len) => format!("{len}-byte frame: larger than XDP takes"),
        }
    }
}

/// One packet of a capture.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its capture timestamp (since the Unix epoch, as the file says).
    pub time: Duration,
    /// The Ethernet frame to run, or why there is none.
    pub frame: Result<Vec<u8>, Skip>,
    pub direction: Direction,
}

/// Which way a captured packet went, where the capture says (Linux cooked captures,
/// pcapng's direction flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Arriving,
    /// Sent by the capturing host: the egress program's, not XDP's.
    Leaving,
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{}: cannot be read: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng capture ({0})")]
    NotACapture(String),
    #[error("the capture's link type {0} is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP and BSD loopback are)")]
    UnsupportedLink(u32),
    #[error("packet {index}: the capture is corrupt from here on: {detail}")]
    Corrupt { index: u64, detail: String },
}

/// The bytes a file starts with tell its format.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1], // microseconds, little-endian
    [0xa1, 0xb2, 0xc3, 0xd4], // microseconds, big-endian
    [0x4d, 0x3c, 0xb2, 0xa1], // nanoseconds, little-endian
    [0xa1, 0xb2, 0x3c, 0x4d], // nanoseconds, big-endian
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

type Input<R> = Chain<Cursor<[u8; 4]>, R>;

enum Reader<R: Read> {
    Pcap {
        reader: PcapReader<Input<R>>,
        link: DataLink,
    },
    PcapNg(PcapNgReader<Input<R>>),
}

/// A pcap or pcapng capture, read packet by packet.
pub struct Capture<R: Read> {
    reader: Reader<R>,
    /// Records handed out so far (also the index of the next, from 1 in errors).
    read: u64,
    /// The last timestamp seen, for pcapng's simple packets, which carry none.
    last_time: Duration,
    /// True once the capture ended mid-record (a capture cut off while written).
    cut_off: bool,
    done: bool,
}

impl Capture<BufReader<File>> {
    /// Opens a capture file; the format comes from its first bytes.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let open_error = |source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        if file.metadata().map_err(open_error)?.is_dir() {
            return Err(open_error(std::io::Error::new(
                ErrorKind::IsADirectory,
                "a directory, not a capture file",
            )));
        }
        Self::new(BufReader::new(file))
    }
}

impl<R: Read> Capture<R> {
    pub fn new(mut input: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        if let Err(e) = input.read_exact(&mut magic) {
            return Err(if e.kind() == ErrorKind::UnexpectedEof {
                CaptureError::NotACapture("the file is empty or shorter than a header".into())
            } else {
                CaptureError::NotACapture(e.to_string())
            });
        }
        let input = Cursor::new(magic).chain(input);
        let header_error = |e: PcapError| CaptureError::NotACapture(describe(&e));
        let reader = if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(input).map_err(header_error)?;
            let link = reader.header().datalink;
            if !is_supported(link) {
                return Err(CaptureError::UnsupportedLink(u32::from(link)));
            }
            Reader::Pcap { reader, link }
        } else if magic == PCAPNG_MAGIC {
            Reader::PcapNg(PcapNgReader::new(input).map_err(header_error)?)
        } else {
            return Err(CaptureError::NotACapture(format!(
                "it starts with {:02x} {:02x} {:02x} {:02x}",
                magic[0], magic[1], magic[2], magic[3]
            )));
        };
        Ok(Self {
            reader,
            read: 0,
            last_time: Duration::ZERO,
            cut_off: false,
            done: false,
        })
    }

    /// True if the capture ended in the middle of a record (as when the capturing
    /// program was killed): the records before it were all read.
    pub fn was_cut_off(&self) -> bool {
        self.cut_off
    }

    /// The next packet; None at the end. After an error, None.
    pub fn next_record(&mut self) -> Option<Result<Record, CaptureError>> {
        if self.done {
            return None;
        }
        let next = match &mut self.reader {
            Reader::Pcap { reader, link } => {
                let link = *link;
                let resolution = reader.header().ts_resolution;
                // Raw: pcap-file's checked packets refuse an original length above the
                // snap length, which is what every snap-length-cut packet has.
                reader.next_raw_packet().map(|packet| {
                    packet.map(|packet| Record {
                        time: pcap_time(packet.ts_sec, packet.ts_frac, resolution),
                        frame: frame_of(link, &packet.data, packet.orig_len),
                        direction: direction_of(link, &packet.data),
                    })
                })
            }
            Reader::PcapNg(reader) => next_pcapng_record(reader, self.last_time),
        };
        match next {
            None => {
                self.done = true;
                None
            }
            Some(Ok(record)) => {
                self.read += 1;
                self.last_time = record.time;
                Some(Ok(record))
            }
            Some(Err(e)) => {
                self.done = true;
                if is_cut_off(&e) {
                    self.cut_off = true;
                    return None;
                }
                Some(Err(CaptureError::Corrupt {
                    index: self.read + 1,
                    detail: describe(&e),
                }))
            }
        }
    }
}

/// The next packet of a pcapng capture, skipping blocks that carry none.
fn next_pcapng_record<R: Read>(
    reader: &mut PcapNgReader<R>,
    last_time: Duration,
) -> Option<Result<Record, PcapError>> {
    loop {
        let block = match reader.next_block()? {
            Ok(block) => block,
            Err(e) => return Some(Err(e)),
        };
        let (interface_id, raw_time, original_len, data, flags) = match &block {
            Block::EnhancedPacket(packet) => {
                let flags = packet.options.iter().find_map(|option| match option {
                    EnhancedPacketOption::Flags(flags) => Some(*flags),
                    _ => None,
                });
                (
                    packet.interface_id,
                    Some(packet.timestamp),
                    packet.original_len,
                    packet.data.to_vec(),
                    flags,
                )
            }
            Block::SimplePacket(packet) => {
                (0, None, packet.original_len, packet.data.to_vec(), None)
            }
            Block::Packet(packet) => (
                u32::from(packet.interface_id),
                Some(Duration::from_nanos(packet.timestamp)),
                packet.original_len,
                packet.data.to_vec(),
                None,
            ),
            _ => continue,
        };
        // The block borrows the reader's buffer; the interfaces are the reader's too.
        drop(block);
        let Some(interface) = reader.interfaces().get(interface_id as usize) else {
            return Some(Err(PcapError::InvalidInterfaceId(interface_id)));
        };
        let time = match raw_time {
            Some(raw) => pcapng_time(interface, raw),
            None => last_time,
        };
        // The direction bits of epb_flags: 1 is inbound, 2 outbound.
        let direction = match flags.map(|flags| flags & 0b11) {
            Some(0b01) => Direction::Arriving,
            Some(0b10) => Direction::Leaving,
            _ => direction_of(interface.linktype, &data),
        };
        let frame = frame_of(interface.linktype, &data, original_len);
        return Some(Ok(Record {
            time,
            frame,
            direction,
        }));
    }
}

/// A pcap timestamp: seconds and a fraction in the file's unit.
fn pcap_time(seconds: u32, fraction: u32, resolution: TsResolution) -> Duration {
    let nanos = match resolution {
        TsResolution::MicroSecond => u64::from(fraction).saturating_mul(1000),
        TsResolution::NanoSecond => u64::from(fraction),
    };
    // A fraction of a second or more (a broken writer) carries over.
    Duration::from_secs(u64::from(seconds)).saturating_add(Duration::from_nanos(nanos))
}

/// A pcapng timestamp in the interface's units (pcap-file hands the raw count over as
/// nanoseconds, whatever `if_tsresol` says; the default unit is the microsecond).
fn pcapng_time(interface: &InterfaceDescriptionBlock, raw: Duration) -> Duration {
    let mut resolution = 6u8;
    let mut offset_seconds = 0u64;
    for option in &interface.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(r) => resolution = *r,
            InterfaceDescriptionOption::IfTsOffset(o) => offset_seconds = *o,
            _ => {}
        }
    }
    let count = raw.as_nanos();
    let nanos = if resolution & 0x80 == 0 {
        // Units of 10^-resolution seconds.
        let exponent = u32::from(resolution);
        if exponent <= 9 {
            count.saturating_mul(10u128.pow(9 - exponent))
        } else {
            count / 10u128.pow((exponent - 9).min(38))
        }
    } else {
        // Units of 2^-n seconds.
        let shift = u32::from(resolution & 0x7f).min(127);
        count.saturating_mul(1_000_000_000) >> shift
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        .saturating_add(Duration::from_secs(offset_seconds))
}

/// Reading stopped because the data ended inside a record.
fn is_cut_off(error: &PcapError) -> bool {
    matches!(error, PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof)
        || matches!(error, PcapError::IncompleteBuffer)
}

fn describe(error: &PcapError) -> String {
    match error {
        PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            "the file ends inside its header".into()
        }
        PcapError::IoError(e) => format!("reading failed: {e}"),
        PcapError::InvalidField(what) => format!("invalid field: {what}"),
        PcapError::InvalidInterfaceId(id) => {
            format!("a packet names interface {id}, which the capture does not describe")
        }
        other => other.to_string(),
    }
}

/// Link types turned into Ethernet (see [`frame_of`]).
fn is_supported(link: DataLink) -> bool {
    matches!(
        link,
        DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::LINUX_SLL2
            | DataLink::RAW
            | DataLink::IPV4
            | DataLink::IPV6
            | DataLink::NULL
            | DataLink::LOOP
    ) || matches!(link, DataLink::Unknown(12 | 14)) // DLT_RAW on some BSDs
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETH_HEADER_LEN: usize = 14;
/// Linux cooked capture v1: packet type, ARPHRD, address length, 8 address bytes,
/// protocol.
const SLL_HEADER_LEN: usize = 16;
/// Linux cooked capture v2: protocol, reserved, ifindex, ARPHRD, packet type, address
/// length, 8 address bytes.
const SLL2_HEADER_LEN: usize = 20;
/// `PACKET_OUTGOING`: the capturing host sent it.
const PACKET_OUTGOING: u8 = 4;

/// The Ethernet frame a NIC would hand XDP for a captured packet of link type `link`:
/// Ethernet as captured; other link types get a synthesized Ethernet header (zero MAC
/// addresses, except a cooked capture's 6-byte source address) with the EtherType of
/// their protocol.
pub fn frame_of(link: DataLink, data: &[u8], original_len: u32) -> Result<Vec<u8>, Skip> {
    let (ethertype, source_mac, payload) = match link {
        DataLink::ETHERNET => {
            check_whole(data, original_len)?;
            if data.len() < ETH_HEADER_LEN {
                return Err(Skip::TooShort);
            }
            return Ok(data.to_vec());
        }
        DataLink::LINUX_SLL => {
            let header = data.get(..SLL_HEADER_LEN).ok_or(Skip::TooShort)?;
            let address_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            let protocol = u16::from_be_bytes([header[14], header[15]]);
            let mac = (address_len == 6).then(|| &header[6..12]);
            (protocol, mac, &data[SLL_HEADER_LEN..])
        }
        DataLink::LINUX_SLL2 => {
            let header = data.get(..SLL2_HEADER_LEN).ok_or(Skip::TooShort)?;
            let protocol = u16::from_be_bytes([header[0], header[1]]);
            let mac = (header[11] == 6).then(|| &header[12..18]);
            (protocol, mac, &data[SLL2_HEADER_LEN..])
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 | DataLink::Unknown(12 | 14) => {
            (ip_ethertype(data)?, None, data)
        }
        // BSD loopback: a 4-byte address family (host order for NULL, network order for
        // LOOP, and its numbers differ by OS): the IP version nibble says it all.
        DataLink::NULL | DataLink::LOOP => {
            let packet = data.get(4..).ok_or(Skip::TooShort)?;
            (ip_ethertype(packet)?, None, packet)
        }
        other => return Err(Skip::UnsupportedLink(u32::from(other))),
    };
    check_whole(data, original_len)?;
    let mut frame = Vec::with_capacity(ETH_HEADER_LEN + payload.len());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(source_mac.unwrap_or(&[0; 6]));
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// The direction a link-layer header records: a Linux cooked capture's packet type.
pub fn direction_of(link: DataLink, data: &[u8]) -> Direction {
    let packet_type = match link {
        DataLink::LINUX_SLL => data.get(1).copied(),
        DataLink::LINUX_SLL2 => data.get(10).copied(),
        _ => return Direction::Unknown,
    };
    match packet_type {
        Some(PACKET_OUTGOING) => Direction::Leaving,
        Some(_) => Direction::Arriving,
        None => Direction::Unknown,
    }
}

/// Refuses a packet captured shorter than it was.
fn check_whole(data: &[u8], original_len: u32) -> Result<(), Skip> {
    let captured = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if captured < original_len {
        return Err(Skip::Truncated {
            captured,
            original: original_len,
        });
    }
    Ok(())
}

/// The EtherType of a raw IP packet, from its version nibble.
fn ip_ethertype(packet: &[u8]) -> Result<u16, Skip> {
    match packet.first().map(|byte| byte >> 4) {
        Some(4) => Ok(ETHERTYPE_IPV4),
        Some(6) => Ok(ETHERTYPE_IPV6),
        Some(_) => Ok(0), // neither: the program passes it as not SIP, as it would
        None => Err(Skip::TooShort),
    }
}

/// XDP's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Anything else (XDP_ABORTED, XDP_TX...): the program never returns these.
    Other(u32),
}

impl Action {
    fn from_xdp(action: u32) -> Self {
        match action {
            1 => Action::Drop,
            2 => Action::Pass,
            other => Action::Other(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Other(_) => "other",
        }
    }
}

/// The program's verdict on one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub reason: Reason,
    /// The request's method; [`Method::None`] for everything but SIP requests.
    pub method: Method,
    /// Bans this packet made (in dry-run: would have made), by reason.
    pub bans: Vec<BanReason>,
    /// Why a ban, or a count toward one, was not made for this packet, if one was at
    /// stake and skipped: `bad_checksum` (the kernel would drop the packet: a capture
    /// from the sending host holds checksums its NIC had still to fill in) or
    /// `fragment`.
    pub ban_skipped: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("the counters grew by {0} packets around one test run, not 1: is the program running elsewhere?")]
    Counting(u64),
}

/// Runs frames through a loaded, configured filter, one at a time, each against the
/// state (buckets, windows, bans) the ones before left in its maps.
pub struct Replayer {
    filter: Filter,
    counters: Counters,
    /// Set by [`Replayer::learn_from_answers`]: the server's own addresses.
    answers_from: Option<Vec<IpAddr>>,
}

/// What the egress program made of a packet leaving the server (issue 13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerVerdict {
    /// What each message read was taken for: one for a datagram, one per message for a
    /// TCP segment (issue 14), in [`AnswerKind::ALL`]'s order.
    pub kinds: Vec<AnswerKind>,
    /// Bans it made (a failed password or a refused user past a threshold).
    pub bans: Vec<BanReason>,
    /// Accounts it locked (for the source, or across sources).
    pub lockouts: u64,
    /// Whether it made its destination `registered`.
    pub registered: bool,
}

impl AnswerVerdict {
    /// The kinds' names, joined by `+` (`failure+failure` for a TCP segment holding two
    /// failed passwords' answers).
    pub fn kind_names(&self) -> String {
        self.kinds
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// A replayed packet's fate: judged by XDP as it arrived, or read by the egress
/// program as it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Request(Verdict),
    Answer(AnswerVerdict),
}

/// The largest frame BPF_PROG_TEST_RUN takes for an XDP program without fragments
/// support: a page less the headroom and the `skb_shared_info` tailroom (Linux 6.x).
pub const MAX_TEST_RUN_FRAME: usize = 4096 - 256 - 320;

impl Replayer {
    pub fn new(filter: Filter) -> Result<Self, ReplayError> {
        let counters = filter.counters()?;
        Ok(Self {
            filter,
            counters,
            answers_from: None,
        })
    }

    /// Runs the packets the server sent through the egress program, as the filter learns
    /// from answers: those the capture marks as sent, and, where it does not say, those
    /// from one of `own_addresses`.
    pub fn learn_from_answers(&mut self, own_addresses: Vec<IpAddr>) {
        self.answers_from = Some(own_addresses);
    }

    /// Runs `frame` through the program that would see it: XDP as it arrives, the
    /// egress program as it leaves (with [`Replayer::learn_from_answers`]).
    pub fn run(
        &mut self,
        frame: &[u8],
        direction: Direction,
    ) -> Result<Result<Outcome, Skip>, ReplayError> {
        let leaving = match (direction, &self.answers_from) {
            (Direction::Leaving, _) => true,
            (Direction::Unknown, Some(own)) => {
                source_address(frame).is_some_and(|source| own.contains(&source))
            }
            _ => false,
        };
        if !leaving {
            return Ok(self.judge(frame)?.map(Outcome::Request));
        }
        if self.answers_from.is_none() {
            return Ok(Err(Skip::Outgoing));
        }
        if frame.len() > MAX_TEST_RUN_FRAME {
            return Ok(Err(Skip::TooLarge(frame.len())));
        }
        Ok(Ok(Outcome::Answer(self.answer(frame)?)))
    }

    /// Runs `frame`, a packet leaving the server, through the egress program once.
    pub fn answer(&mut self, frame: &[u8]) -> Result<AnswerVerdict, ReplayError> {
        let answers_before = self.filter.answer_counters()?;
        self.filter.test_run_answer(frame)?;
        let answers = self.filter.answer_counters()?.since(&answers_before);
        let now = self.filter.counters()?;
        let delta = now.since(&self.counters);
        self.counters = now;
        // One kind per message read: the first, and each later one of a TCP segment.
        let counted: u64 = answers.kinds.iter().sum();
        if counted == 0 || counted != 1 + answers.stream_later {
            return Err(ReplayError::Counting(counted));
        }
        let kinds = AnswerKind::ALL
            .into_iter()
            .flat_map(|kind| std::iter::repeat_n(kind, answers.of(kind) as usize))
            .collect();
        Ok(AnswerVerdict {
            kinds,
            bans: bans_made(&delta),
            lockouts: answers.lockouts + answers.account_lockouts,
            registered: answers.registrations != 0,
        })
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Runs `frame` through the program once.
    pub fn judge(&mut self, frame: &[u8]) -> Result<Result<Verdict, Skip>, ReplayError> {
        if frame.len() > MAX_TEST_RUN_FRAME {
            return Ok(Err(Skip::TooLarge(frame.len())));
        }
        let action = Action::from_xdp(self.filter.test_run(frame)?);
        let now = self.filter.counters()?;
        let delta = now.since(&self.counters);
        self.counters = now;
        let (total, found) = segment_verdict(&delta);
        let (reason, method) = match (total, found) {
            (1, Some(found)) => found,
            (n, Some(found)) if is_tcp_walk(&delta, n) => found,
            _ => return Err(ReplayError::Counting(total)),
        };
        let bans = bans_made(&delta);
        let ban_skipped = if delta.ban_skipped_bad_checksum != 0 {
            Some("bad_checksum")
        } else if delta.ban_skipped_fragment != 0 {
            Some("fragment")
        } else {
            None
        };
        Ok(Ok(Verdict {
            action,
            reason,
            method,
            bans,
            ban_skipped,
        }))
    }
}

// Issue 14: a TCP segment counts a verdict per message.

/// The verdicts a change of the counters records, and the one that stands for the
/// packet: the drop if there is one (a segment's walk stops at its first), else the
/// first reason counted (in `Reason::ALL`'s order).
fn segment_verdict(delta: &Counters) -> (u64, Option<(Reason, Method)>) {
    let mut found: Option<(Reason, Method)> = None;
    let mut total = 0u64;
    for reason in Reason::ALL {
        for method in Method::ALL {
            let count = delta.packets[reason as usize][method as usize];
            if count != 0 {
                total = total.saturating_add(count);
                if found.is_none_or(|(kept, _)| !kept.is_drop() && reason.is_drop()) {
                    found = Some((reason, method));
                }
            }
        }
    }
    (total, found)
}

/// Whether `total` verdicts are one TCP segment's messages: all in the TCP row, at
/// most as many as the kernel walks (and the rest's `pass_stream_limit`).
fn is_tcp_walk(delta: &Counters, total: u64) -> bool {
    let tcp: u64 = delta.transports[Transport::Tcp as usize].iter().sum();
    tcp == total && total <= u64::from(MAX_STREAM_MESSAGES) + 1
}

/// The bans a change of the counters records, by reason.
fn bans_made(delta: &Counters) -> Vec<BanReason> {
    let mut bans = Vec::new();
    for reason in BanReason::ALL {
        let slot = (reason as usize) & (BAN_SLOTS - 1);
        for _ in 0..delta.bans_added[slot] {
            bans.push(reason);
        }
    }
    bans
}

/// An Ethernet frame's IP source address, if it holds an IP packet.
fn source_address(frame: &[u8]) -> Option<IpAddr> {
    use etherparse::{LaxNetSlice, LaxSlicedPacket};
    match LaxSlicedPacket::from_ethernet(frame).ok()?.net? {
        LaxNetSlice::Ipv4(ipv4) => Some(IpAddr::from(ipv4.header().source_addr())),
        LaxNetSlice::Ipv6(ipv6) => Some(IpAddr::from(ipv6.header().source_addr())),
    }
}

/// What a frame is, for a person: its addresses and the first line of a UDP payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameSummary {
    /// `address:port` for UDP, the address for other IP packets, empty otherwise.
    pub source: String,
    pub destination: String,
    /// The payload's first line for UDP (a SIP request or status line), else the
    /// protocol ("tcp", "icmpv6", "ethertype 0x0806"...).
    pub summary: String,
}

/// Summarizes an Ethernet frame (the one [`frame_of`] made).
pub fn summarize(frame: &[u8]) -> FrameSummary {
    use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
    let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) else {
        return FrameSummary {
            summary: "not an Ethernet frame".into(),
            ..FrameSummary::default()
        };
    };
    let (source, destination, protocol) = match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => (
            std::net::IpAddr::from(ip.header().source_addr()),
            std::net::IpAddr::from(ip.header().destination_addr()),
            ip.header().protocol(),
        ),
        Some(LaxNetSlice::Ipv6(ip)) => (
            std::net::IpAddr::from(ip.header().source_addr()),
            std::net::IpAddr::from(ip.header().destination_addr()),
            ip.payload().ip_number,
        ),
        None => {
            let ethertype = frame
                .get(12..14)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            return FrameSummary {
                summary: format!("ethertype 0x{ethertype:04x}"),
                ..FrameSummary::default()
            };
        }
    };
    match &packet.transport {
        Some(TransportSlice::Udp(udp)) => FrameSummary {
            source: std::net::SocketAddr::new(source, udp.source_port()).to_string(),
            destination: std::net::SocketAddr::new(destination, udp.destination_port()).to_string(),
            summary: first_line(udp.payload()),
        },
        transport => FrameSummary {
            source: source.to_string(),
            destination: destination.to_string(),
            summary: match transport {
                Some(TransportSlice::Tcp(_)) => "tcp".into(),
                Some(TransportSlice::Icmpv4(_)) => "icmp".into(),
                Some(TransportSlice::Icmpv6(_)) => "icmpv6".into(),
                _ => match protocol.keyword_str() {
                    Some(name) => name.to_ascii_lowercase(),
                    None => format!("ip protocol {}", protocol.0),
                },
            },
        },
    }
}

/// The longest first line shown.
const FIRST_LINE_CHARS: usize = 72;

/// A payload's first line, printable, at most [`FIRST_LINE_CHARS`] long.
fn first_line(payload: &[u8]) -> String {
    if payload.is_empty() {
        return "(empty)".into();
    }
    if payload.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        return "(keep-alive)".into();
    }
    let line = payload
        .split(|b| matches!(b, b'\r' | b'\n'))
        .next()
        .unwrap_or_default();
    let mut text: String = line
        .iter()
        .take(FIRST_LINE_CHARS)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    if line.len() > FIRST_LINE_CHARS {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use pcap_file::{
        pcap::{PcapPacket, PcapWriter},
        pcapng::{blocks::enhanced_packet::EnhancedPacketBlock, PcapNgWriter},
    };

    use super::*;

    /// IPv4/UDP from 198.18.0.1:40000 to 198.18.0.2:5060 carrying `payload`, no link header.
    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let builder =
            etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).udp(40000, 5060);
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).unwrap();
        packet
    }

    fn pcap_of(link: DataLink, packets: &[(Vec<u8>, u32)]) -> Vec<u8> {
        let header = pcap_file::pcap::PcapHeader {
            datalink: link,
            ..Default::default()
        };
        let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, (data, original)) in packets.iter().enumerate() {
            let time = Duration::from_millis(1_000 + i as u64);
            writer
                .write_packet(&PcapPacket::new(time, *original, data))
                .unwrap();
        }
        writer.into_writer()
    }

    fn records(bytes: &[u8]) -> Vec<Record> {
        let mut capture = Capture::new(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(record) = capture.next_record() {
            out.push(record.unwrap());
        }
        out
    }

    #[test]
    fn raw_ip_gets_an_ethernet_header_with_its_ethertype() {
        let packet = ipv4_udp(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        for link in [DataLink::RAW, DataLink::IPV4, DataLink::Unknown(12)] {
            let bytes = pcap_of(link, &[(packet.clone(), packet.len() as u32)]);
            let frame = records(&bytes).remove(0).frame.unwrap();
            assert_eq!(frame[..12], [0; 12]);
            assert_eq!(frame[12..14], ETHERTYPE_IPV4.to_be_bytes());
            assert_eq!(frame[14..], packet[..]);
            let summary = summarize(&frame);
            assert_eq!(summary.source, "198.18.0.1:40000");
            assert_eq!(summary.destination, "198.18.0.2:5060");
            assert_eq!(summary.summary, "OPTIONS sip:a@b SIP/2.0");
        }
    }

    #[test]
    fn cooked_captures_keep_protocol_and_source_address_and_say_outgoing() {
        let packet = ipv4_udp(b"\r\n\r\n");
        let mac = [2, 0, 0, 0, 0, 9];
        // SLL: packet type, ARPHRD_ETHER, address length, address (8), protocol.
        let mut sll = vec![0, 0, 0, 1, 0, 6];
        sll.extend_from_slice(&mac);
        sll.extend_from_slice(&[0, 0, 0x08, 0x00]);
        sll.extend_from_slice(&packet);
        let frame = frame_of(DataLink::LINUX_SLL, &sll, sll.len() as u32).unwrap();
        assert_eq!(frame[..6], [0; 6]);
        assert_eq!(frame[6..12], mac);
        assert_eq!(frame[12..14], [0x08, 0x00]);
        assert_eq!(frame[14..], packet[..]);
        assert_eq!(summarize(&frame).summary, "(keep-alive)");
        assert_eq!(direction_of(DataLink::LINUX_SLL, &sll), Direction::Arriving);
        sll[1] = 4;
        assert_eq!(direction_of(DataLink::LINUX_SLL, &sll), Direction::Leaving);
        assert_eq!(
            frame_of(DataLink::LINUX_SLL, &sll, sll.len() as u32),
            Ok(frame),
            "what the host sent is kept, for the egress program"
        );
        // SLL2: protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length,
        // address (8).
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6];
        sll2.extend_from_slice(&mac);
        sll2.extend_from_slice(&[0, 0]);
        sll2.extend_from_slice(b"\x60rest");
        let frame = frame_of(DataLink::LINUX_SLL2, &sll2, sll2.len() as u32).unwrap();
        assert_eq!(frame[6..12], mac);
        assert_eq!(frame[12..14], ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(frame[14..], *b"\x60rest");
        sll2[10] = 4;
        assert_eq!(
            direction_of(DataLink::LINUX_SLL2, &sll2),
            Direction::Leaving
        );
        assert_eq!(
            frame_of(DataLink::LINUX_SLL2, &sll2, sll2.len() as u32),
            Ok(frame)
        );
        assert_eq!(direction_of(DataLink::ETHERNET, &sll2), Direction::Unknown);
        assert_eq!(
            frame_of(DataLink::LINUX_SLL2, &sll2[..10], 10),
            Err(Skip::TooShort)
        );
    }

    #[test]
    fn loopback_headers_are_replaced_by_the_ip_version() {
        let packet = ipv4_udp(b"x");
        for family in [2u32.to_ne_bytes(), 2u32.to_be_bytes()] {
            let mut data = family.to_vec();
            data.extend_from_slice(&packet);
            for link in [DataLink::NULL, DataLink::LOOP] {
                let frame = frame_of(link, &data, data.len() as u32).unwrap();
                assert_eq!(frame[12..14], ETHERTYPE_IPV4.to_be_bytes());
                assert_eq!(frame[14..], packet[..]);
            }
        }
    }

    #[test]
    fn truncated_packets_and_unsupported_links_are_refused_by_name() {
        let packet = ipv4_udp(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&packet);
        let bytes = pcap_of(
            DataLink::ETHERNET,
            &[
                (frame[..40].to_vec(), frame.len() as u32),
                (frame.clone(), frame.len() as u32),
            ],
        );
        let got = records(&bytes);
        assert_eq!(
            got[0].frame,
            Err(Skip::Truncated {
                captured: 40,
                original: frame.len() as u32
            })
        );
        assert_eq!(got[1].frame.as_deref(), Ok(&frame[..]));
        assert_eq!(got[1].time - got[0].time, Duration::from_millis(1));

        let bytes = pcap_of(DataLink::IEEE802_11, &[(frame.clone(), frame.len() as u32)]);
        assert!(matches!(
            Capture::new(&bytes[..]),
            Err(CaptureError::UnsupportedLink(105))
        ));
    }

    #[test]
    fn pcapng_timestamps_follow_the_interface_resolution_and_direction_flags() {
        let packet = ipv4_udp(b"x");
        for (resolution, per_second) in [(None, 1_000_000u64), (Some(9u8), 1_000_000_000)] {
            let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
            let mut interface = InterfaceDescriptionBlock::new(DataLink::RAW, 0);
            if let Some(r) = resolution {
                interface
                    .options
                    .push(InterfaceDescriptionOption::IfTsResol(r));
            }
            writer.write_pcapng_block(interface).unwrap();
            for (i, flags) in [None, Some(0b10), Some(0b01)].into_iter().enumerate() {
                // 12.5 s plus i ms, in the interface's unit (pcap-file writes the count).
                let count = 12 * per_second + per_second / 2 + i as u64 * per_second / 1000;
                writer
                    .write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: Duration::from_nanos(count),
                        original_len: packet.len() as u32,
                        data: packet.as_slice().into(),
                        options: flags.map(EnhancedPacketOption::Flags).into_iter().collect(),
                    })
                    .unwrap();
            }
            let got = records(&writer.into_inner());
            assert_eq!(got[0].time, Duration::from_millis(12_500));
            assert_eq!(got[2].time, Duration::from_millis(12_502));
            assert!(got.iter().all(|record| record.frame.is_ok()));
            let directions: Vec<Direction> = got.iter().map(|record| record.direction).collect();
            assert_eq!(
                directions,
                [Direction::Unknown, Direction::Leaving, Direction::Arriving]
            );
        }
    }

    #[test]
    fn bad_files_are_errors_and_cut_ones_end_early() {
        for bytes in [&b""[..], b"abc", b"not a capture at all, just text\n"] {
            assert!(matches!(
                Capture::new(bytes),
                Err(CaptureError::NotACapture(_))
            ));
        }
        let packet = ipv4_udp(b"x");
        let bytes = pcap_of(
            DataLink::RAW,
            &vec![(packet.clone(), packet.len() as u32); 3],
        );
        // A pcap header cut short.
        assert!(matches!(
            Capture::new(&bytes[..10]),
            Err(CaptureError::NotACapture(_))
        ));
        // The last record cut short: the ones before it read, then the end, noted.
        let mut capture = Capture::new(&bytes[..bytes.len() - 5]).unwrap();
        assert!(capture.next_record().unwrap().is_ok());
        assert!(capture.next_record().unwrap().is_ok());
        assert!(capture.next_record().is_none());
        assert!(capture.was_cut_off());
        // A pcapng block whose length is nonsense: corrupt, at that packet.
        let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0))
            .unwrap();
        let mut bytes = writer.into_inner();
        bytes.extend_from_slice(&[6, 0, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut capture = Capture::new(&bytes[..]).unwrap();
        assert!(matches!(
            capture.next_record(),
            Some(Err(CaptureError::Corrupt { index: 1, .. }))
        ));
        assert!(capture.next_record().is_none());
    }

    proptest::proptest! {
        /// Whatever the bytes after a valid start, reading ends without a panic.
        #[test]
        fn damaged_captures_never_panic(
            pcapng in proptest::bool::ANY,
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
        ) {
            let packet = ipv4_udp(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
            let mut bytes = if pcapng {
                let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
                writer.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0)).unwrap();
                for _ in 0..3 {
                    writer.write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: Duration::from_nanos(5),
                        original_len: packet.len() as u32,
                        data: packet.as_slice().into(),
                        options: vec![],
                    }).unwrap();
                }
                writer.into_inner()
            } else {
                pcap_of(DataLink::LINUX_SLL2, &vec![(packet.clone(), packet.len() as u32); 3])
            };
            for (at, value) in flips {
                // The magic stays, so the parsers behind it are what is tried.
                if at >= 4 && at < bytes.len() {
                    bytes[at] = value;
                }
            }
            bytes.truncate(cut.max(4));
            if let Ok(mut capture) = Capture::new(&bytes[..]) {
                let mut n = 0;
                while let Some(record) = capture.next_record() {
                    if let Ok(Record { frame: Ok(frame), .. }) = record {
                        let _ = summarize(&frame);
                    }
                    n += 1;
                    proptest::prop_assert!(n < 100);
                }
            }
        }
    }

    // Issue 14: a TCP segment's several verdicts.
    #[test]
    fn a_tcp_segment_stands_for_its_drop() {
        let mut delta = Counters::default();
        for reason in [Reason::PassRequest, Reason::DropScanner] {
            delta.packets[reason as usize][Method::Options as usize] += 1;
            delta.transports[Transport::Tcp as usize][reason as usize] += 1;
        }
        let (total, found) = segment_verdict(&delta);
        assert_eq!(found, Some((Reason::DropScanner, Method::Options)));
        assert!(is_tcp_walk(&delta, total));
        // Two verdicts that are not one segment's: the counting is wrong.
        delta.transports[Transport::Tcp as usize][Reason::PassRequest as usize] = 0;
        delta.transports[Transport::Udp as usize][Reason::PassRequest as usize] = 1;
        assert!(!is_tcp_walk(&delta, total));
    }
}
