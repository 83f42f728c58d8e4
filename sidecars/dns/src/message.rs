//! One DNS message in, at most one out: the responder's whole policy, independent of the
//! transport.
//!
//! | query | answer |
//! | --- | --- |
//! | fewer than 12 bytes, a response (QR=1), over the transport's size | none (dropped) |
//! | an opcode other than QUERY | NOTIMP |
//! | a header whose counts do not fit the packet, QDCOUNT ≠ 1, a body that does not parse | FORMERR |
//! | EDNS version other than 0 | BADVERS |
//! | a bottle name, class IN, type `A` / `AAAA` | its addresses, `ttl_s`, AA set |
//! | a bottle name, class IN, another type | NOERROR without answers (NODATA), AA set |
//! | any other name or class | REFUSED, logged (see [`crate::refusals`]), nothing forwarded |
//!
//! Parsing and encoding are hickory-proto's; a response that would exceed the transport's
//! limit (512 bytes over UDP) is sent with its answers removed and TC set (RFC 1035 §4.2.1),
//! so the client retries over TCP.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::config::Config;
use crate::names::{self, Names};
use crate::refusals::Refusals;

/// Largest UDP message accepted or sent (RFC 1035; the responder advertises no more with
/// EDNS either: its answers are a handful of addresses).
pub const UDP_MAX: usize = 512;
/// Largest TCP message (the 2-byte length prefix's limit).
pub const TCP_MAX: usize = u16::MAX as usize;
/// Size of a DNS header.
pub const HEADER_LEN: usize = 12;

/// The transport a message came over; it decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram: at most [`UDP_MAX`] bytes each way.
    Udp,
    /// A length-prefixed TCP frame: at most [`TCP_MAX`] bytes each way.
    Tcp,
}

impl Transport {
    /// The largest message accepted and sent over it.
    pub fn max_len(self) -> usize {
        match self {
            Transport::Udp => UDP_MAX,
            Transport::Tcp => TCP_MAX,
        }
    }

    /// `udp` or `tcp`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the responder did with a message (returned with the bytes, for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Nothing is sent: not a query at all.
    Dropped,
    /// Addresses of a bottle name.
    Answered,
    /// A bottle name without records of the asked type.
    NoData,
    /// Not a bottle name (or not class IN).
    Refused,
    /// The header parsed, the rest did not make a single well-formed question.
    FormErr,
    /// An opcode other than QUERY.
    NotImp,
    /// An EDNS version the responder does not speak.
    BadVers,
}

/// The responder: the bottle's names, the TTL and the refusal log.
#[derive(Debug)]
pub struct Responder {
    names: Names,
    ttl: u32,
    refusals: Refusals,
}

impl Responder {
    /// A responder for a validated config.
    pub fn new(config: &Config) -> Responder {
        Responder {
            names: Names::from_config(config),
            ttl: config.ttl_s,
            refusals: Refusals::default(),
        }
    }

    /// The table it answers from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The response to `packet`, if any. Never panics, whatever the bytes.
    pub fn respond(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.handle(packet, transport).1
    }

    /// [`Responder::respond`], also saying what was decided.
    pub fn handle(&self, packet: &[u8], transport: Transport) -> (Outcome, Option<Vec<u8>>) {
        let proto = transport.as_str();
        if packet.len() > transport.max_len() {
            tracing::debug!(proto, len = packet.len(), "dropped an oversized message");
            return (Outcome::Dropped, None);
        }
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            tracing::debug!(
                proto,
                len = packet.len(),
                "dropped a message without a header"
            );
            return (Outcome::Dropped, None);
        };
        if header.message_type() == MessageType::Response {
            // Answering responses could make two responders bounce a packet forever.
            tracing::debug!(proto, "dropped a response");
            return (Outcome::Dropped, None);
        }
        let max = transport.max_len();
        if header.op_code() != OpCode::Query {
            tracing::debug!(proto, opcode = %header.op_code(), "not implemented");
            let bytes = encode(bare(&header, ResponseCode::NotImp), max);
            return (Outcome::NotImp, bytes);
        }
        if !counts_fit(&header, packet.len()) {
            tracing::debug!(
                proto,
                qdcount = header.query_count(),
                "malformed: section counts"
            );
            return (
                Outcome::FormErr,
                encode(bare(&header, ResponseCode::FormErr), max),
            );
        }
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(proto, %err, "malformed: body");
                return (
                    Outcome::FormErr,
                    encode(bare(&header, ResponseCode::FormErr), max),
                );
            }
        };
        let Some(query) = request.queries().first() else {
            return (
                Outcome::FormErr,
                encode(bare(&header, ResponseCode::FormErr), max),
            );
        };
        let edns = request.extensions().as_ref();
        if edns.is_some_and(|e| e.version() != 0) {
            tracing::debug!(proto, "EDNS version not supported");
            let mut reply = with_query(&header, query, ResponseCode::BADVERS, false);
            reply.set_edns(response_edns());
            return (Outcome::BadVers, encode(reply, max));
        }
        let (outcome, mut reply) = self.decide(&header, query, transport);
        if edns.is_some() {
            reply.set_edns(response_edns());
        }
        (outcome, encode(reply, max))
    }

    fn decide(&self, header: &Header, query: &Query, transport: Transport) -> (Outcome, Message) {
        let name = query.name();
        let qtype = query.query_type();
        let found = (query.query_class() == DNSClass::IN)
            .then(|| self.names.lookup(name))
            .flatten();
        let Some(addrs) = found else {
            self.refusals
                .refused(name, qtype, query.query_class(), transport);
            return (
                Outcome::Refused,
                with_query(header, query, ResponseCode::Refused, false),
            );
        };
        let mut reply = with_query(header, query, ResponseCode::NoError, true);
        let answers: Vec<Record> = match qtype {
            RecordType::A => addrs.v4.iter().map(|ip| self.a(name, *ip)).collect(),
            RecordType::AAAA => addrs.v6.iter().map(|ip| self.aaaa(name, *ip)).collect(),
            _ => Vec::new(),
        };
        let key = names::key_of(name).unwrap_or_default();
        let outcome = if answers.is_empty() {
            tracing::debug!(proto = transport.as_str(), name = %key, qtype = %qtype, "no data");
            Outcome::NoData
        } else {
            tracing::debug!(proto = transport.as_str(), name = %key, qtype = %qtype, answers = answers.len(), "answered");
            Outcome::Answered
        };
        reply.add_answers(answers);
        (outcome, reply)
    }

    fn a(&self, name: &Name, ip: Ipv4Addr) -> Record {
        Record::from_rdata(name.clone(), self.ttl, RData::A(A(ip)))
    }

    fn aaaa(&self, name: &Name, ip: Ipv6Addr) -> Record {
        Record::from_rdata(name.clone(), self.ttl, RData::AAAA(AAAA(ip)))
    }
}

/// Whether the header's section counts can describe `len` bytes: exactly one question, and
/// no more records than the bytes could hold (a question is at least 5 bytes, a record at
/// least 11). Checked before parsing so a 12-byte packet claiming 65535 records costs
/// nothing.
fn counts_fit(header: &Header, len: usize) -> bool {
    let records = usize::from(header.answer_count())
        + usize::from(header.name_server_count())
        + usize::from(header.additional_count());
    header.query_count() == 1 && HEADER_LEN + 5 + 11 * records <= len
}

/// The OPT record of a response to an EDNS query: version 0, our UDP limit, no options.
fn response_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_MAX as u16).set_version(0);
    edns
}

/// A response with only a header (no question could be read).
fn bare(request: &Header, rcode: ResponseCode) -> Message {
    let mut header = Header::response_from_request(request);
    header.set_response_code(rcode);
    let mut message = Message::new();
    message.set_header(header);
    message
}

/// A response repeating the question.
fn with_query(
    request: &Header,
    query: &Query,
    rcode: ResponseCode,
    authoritative: bool,
) -> Message {
    let mut message = bare(request, rcode);
    message.set_authoritative(authoritative);
    message.add_query(query.clone());
    message
}

/// Encodes `message` within `max` bytes: whole if it fits, else without answers and with TC
/// set. `None` only if even that does not fit or encoding fails.
fn encode(message: Message, max: usize) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) if bytes.len() <= max => return Some(bytes),
        Ok(_) => {}
        Err(err) => {
            tracing::debug!(%err, "cannot encode a response");
            return None;
        }
    }
    match message.truncate().to_vec() {
        Ok(bytes) if bytes.len() <= max => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecars_common::config::parse;

    fn responder() -> Responder {
        let config: Config = parse(
            r#"{"names": {"sidecars": ["10.213.0.2", "fd00:213::2"], "v4only.bottle.": ["10.213.0.3"]}, "ttl_s": 60}"#,
            "dns.json",
        )
        .unwrap();
        Responder::new(&config)
    }

    fn query_bytes(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(r: &Responder, packet: &[u8], t: Transport) -> (Outcome, Message) {
        let (outcome, bytes) = r.handle(packet, t);
        let bytes = bytes.expect("a response");
        assert!(bytes.len() <= t.max_len());
        (
            outcome,
            Message::from_vec(&bytes).expect("a parsable response"),
        )
    }

    fn addresses(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .map(|r| match r.data() {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_bottle_name_gets_its_a_records() {
        let (outcome, m) = ask(
            &responder(),
            &query_bytes("sidecars.", RecordType::A, false),
            Transport::Udp,
        );
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative() && m.recursion_desired() && !m.recursion_available());
        assert_eq!(m.queries().len(), 1);
        assert_eq!(addresses(&m), vec!["10.213.0.2"]);
        assert_eq!(m.answers()[0].ttl(), 60);
        assert_eq!(
            m.answers()[0].name(),
            &Name::from_ascii("sidecars.").unwrap()
        );
        assert!(m.extensions().is_none());
    }

    #[test]
    fn a_bottle_name_gets_its_aaaa_records() {
        let (outcome, m) = ask(
            &responder(),
            &query_bytes("sidecars", RecordType::AAAA, false),
            Transport::Tcp,
        );
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(addresses(&m), vec!["fd00:213::2"]);
    }

    #[test]
    fn other_types_of_a_bottle_name_are_nodata() {
        let r = responder();
        for qtype in [
            RecordType::MX,
            RecordType::TXT,
            RecordType::ANY,
            RecordType::SOA,
        ] {
            let (outcome, m) = ask(&r, &query_bytes("sidecars", qtype, false), Transport::Udp);
            assert_eq!(outcome, Outcome::NoData, "{qtype}");
            assert_eq!(m.response_code(), ResponseCode::NoError);
            assert!(m.answers().is_empty() && m.authoritative());
        }
        // An IPv4-only name has no AAAA.
        let (outcome, m) = ask(
            &r,
            &query_bytes("v4only.bottle", RecordType::AAAA, false),
            Transport::Udp,
        );
        assert_eq!(outcome, Outcome::NoData);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter_and_the_question_is_echoed() {
        let r = responder();
        for name in ["SIDECARS", "SideCars.", "V4Only.Bottle.", "v4only.bottle"] {
            let (outcome, m) = ask(&r, &query_bytes(name, RecordType::A, false), Transport::Udp);
            assert_eq!(outcome, Outcome::Answered, "{name}");
            // The owner name is spelled as asked (resolvers that randomise case check it).
            let owner = m.answers()[0].name().to_string();
            assert_eq!(owner.trim_end_matches('.'), name.trim_end_matches('.'));
        }
    }

    #[test]
    fn every_other_name_is_refused() {
        let r = responder();
        for name in [
            "example.com.",
            "6b65793d7365637265740a.attacker.example.",
            "x.sidecars.",
            "sidecars.example.",
            "bottle.",
            ".",
            "localhost.",
        ] {
            for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
                let (outcome, m) = ask(&r, &query_bytes(name, qtype, false), Transport::Udp);
                assert_eq!(outcome, Outcome::Refused, "{name} {qtype}");
                assert_eq!(m.response_code(), ResponseCode::Refused);
                assert!(m.answers().is_empty() && !m.authoritative());
                assert_eq!(m.queries()[0].name(), &Name::from_ascii(name).unwrap());
            }
        }
    }

    #[test]
    fn a_bottle_name_in_another_class_is_refused() {
        let mut m = Message::from_vec(&query_bytes("sidecars", RecordType::A, false)).unwrap();
        m.queries_mut()[0].set_query_class(DNSClass::CH);
        let (outcome, reply) = ask(&responder(), &m.to_vec().unwrap(), Transport::Udp);
        assert_eq!(outcome, Outcome::Refused);
        assert_eq!(reply.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn edns_queries_get_an_opt_record_and_unknown_versions_badvers() {
        let r = responder();
        let (_, m) = ask(
            &r,
            &query_bytes("sidecars", RecordType::A, true),
            Transport::Udp,
        );
        let edns = m.extensions().as_ref().expect("an OPT record");
        assert_eq!((edns.version(), edns.max_payload()), (0, 512));
        let (_, m) = ask(
            &r,
            &query_bytes("nope.example", RecordType::A, true),
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(m.extensions().is_some());

        let mut q = Message::from_vec(&query_bytes("sidecars", RecordType::A, true)).unwrap();
        if let Some(e) = q.extensions_mut() {
            e.set_version(1);
        }
        let (outcome, m) = ask(&r, &q.to_vec().unwrap(), Transport::Udp);
        assert_eq!(outcome, Outcome::BadVers);
        // BADVERS shares its number (16) with BADSIG, which is what decoding yields.
        assert_eq!(
            u16::from(m.response_code()),
            u16::from(ResponseCode::BADVERS)
        );
    }

    #[test]
    fn a_parsable_header_with_a_bad_body_is_formerr() {
        let r = responder();
        let good = query_bytes("sidecars", RecordType::A, false);
        // Question cut short.
        let (outcome, m) = ask(&r, &good[..good.len() - 3], Transport::Udp);
        assert_eq!(
            (outcome, m.response_code(), m.id()),
            (Outcome::FormErr, ResponseCode::FormErr, 0x1234)
        );
        assert!(m.queries().is_empty());
        // A label length pointing past the end.
        let mut bad = good.clone();
        bad[HEADER_LEN] = 60;
        assert_eq!(ask(&r, &bad, Transport::Udp).0, Outcome::FormErr);
        // No question, two questions, a header claiming 65535 answers.
        for (at, value) in [(5usize, 0u8), (5, 2), (7, 0xff)] {
            let mut bad = good.clone();
            bad[at] = value;
            if at == 7 {
                bad[6] = 0xff;
            }
            let (outcome, m) = ask(&r, &bad, Transport::Udp);
            assert_eq!(outcome, Outcome::FormErr, "byte {at} = {value}");
            assert_eq!(m.response_code(), ResponseCode::FormErr);
        }
        // A compression pointer loop.
        let mut looped = good[..HEADER_LEN].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(ask(&r, &looped, Transport::Udp).0, Outcome::FormErr);
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let mut bytes = query_bytes("sidecars", RecordType::A, false);
        bytes[2] = (bytes[2] & 0b1000_0111) | (u8::from(OpCode::Update) << 3);
        let (outcome, m) = ask(&responder(), &bytes, Transport::Udp);
        assert_eq!(outcome, Outcome::NotImp);
        assert_eq!(m.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn garbage_responses_and_oversized_messages_are_dropped() {
        let r = responder();
        for packet in [&b""[..], b"\x12", b"hello world", &[0u8; 11]] {
            assert_eq!(r.handle(packet, Transport::Udp), (Outcome::Dropped, None));
        }
        let mut response = query_bytes("sidecars", RecordType::A, false);
        response[2] |= 0x80;
        assert_eq!(
            r.handle(&response, Transport::Udp),
            (Outcome::Dropped, None)
        );
        let mut big = query_bytes("sidecars", RecordType::A, false);
        big.resize(UDP_MAX + 1, 0);
        assert_eq!(r.handle(&big, Transport::Udp).0, Outcome::Dropped);
        // The same bytes over TCP are a well-formed question with trailing junk: answered.
        assert_eq!(r.handle(&big, Transport::Tcp).0, Outcome::Answered);
    }

    #[test]
    fn udp_answers_over_512_bytes_are_truncated() {
        let addrs: Vec<String> = (1..=16).map(|i| format!("\"fd00:213::{i:x}\"")).collect();
        let long_name = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        let config: Config = parse(
            &format!(r#"{{"names": {{"{long_name}": [{}]}}}}"#, addrs.join(",")),
            "dns.json",
        )
        .unwrap();
        let r = Responder::new(&config);
        let q = query_bytes(&long_name, RecordType::AAAA, false);
        let (_, m) = ask(&r, &q, Transport::Udp);
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        assert_eq!(m.queries().len(), 1);
        let (_, m) = ask(&r, &q, Transport::Tcp);
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 16);
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_packets_never_panic() {
        let r = responder();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            query_bytes("sidecars", RecordType::A, true),
            query_bytes("x.attacker.example", RecordType::TXT, true),
            query_bytes("v4only.bottle", RecordType::AAAA, false),
        ];
        let mut counts = std::collections::HashMap::new();
        for i in 0..60_000 {
            let packet: Vec<u8> = if i % 3 == 0 {
                // Pure noise, any length up to past the UDP limit.
                let len = rng.below(600);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A valid query with a few bytes flipped, cut or extended: reaches the parser.
                let mut p = seeds[rng.below(seeds.len())].clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(p.len());
                    p[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    p.truncate(rng.below(p.len() + 1));
                }
                if rng.below(8) == 0 {
                    p.extend((0..rng.below(40)).map(|_| rng.next() as u8));
                }
                p
            };
            for t in [Transport::Udp, Transport::Tcp] {
                let (outcome, bytes) = r.handle(&packet, t);
                *counts.entry(outcome).or_insert(0u32) += 1;
                if let Some(bytes) = bytes {
                    assert!(bytes.len() <= t.max_len());
                    let reply = Message::from_vec(&bytes).expect("responses parse");
                    assert_eq!(reply.message_type(), MessageType::Response);
                    assert_eq!(&bytes[..2], &packet[..2], "the id is echoed");
                }
            }
        }
        // The mutations reached every branch that matters.
        for outcome in [
            Outcome::Dropped,
            Outcome::Answered,
            Outcome::Refused,
            Outcome::FormErr,
        ] {
            assert!(
                counts.get(&outcome).copied().unwrap_or(0) > 0,
                "{outcome:?}: {counts:?}"
            );
        }
    }
}
