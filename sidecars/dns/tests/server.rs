//! The responder's UDP and TCP loops in-process, on loopback: framing, pipelining, the TCP
//! bounds, shutdown, and what a refused query's log line holds.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use dns::{Config, Limits, Responder};
use sidecars_common::shutdown::{Shutdown, ShutdownTrigger};

struct Server {
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
}

async fn start(limits: Limits) -> Server {
    let config: Config = sidecars_common::config::parse(
        r#"{"names": {"sidecars": ["10.213.0.2"]}, "ttl_s": 30}"#,
        "dns.json",
    )
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).await.unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let responder = Arc::new(Responder::new(&config));
    let task = tokio::spawn(dns::server::serve(udp, tcp, responder, limits, shutdown));
    Server {
        addr,
        trigger,
        task,
    }
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Message> {
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut body).await?;
    Ok(Message::from_vec(&body).expect("a parsable response"))
}

/// True once the server has closed `stream` (EOF or reset), within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn udp_answers_refuses_and_ignores_garbage() {
    let server = start(Limits::default()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server.addr).await.unwrap();
    let mut buf = [0u8; 1024];

    client.send(b"garbage!").await.unwrap();
    client
        .send(&query(1, "sidecars.", RecordType::A))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    // The garbage got no answer: the first reply is the query's.
    assert_eq!(m.id(), 1);
    assert_eq!(a_records(&m), vec!["10.213.0.2"]);
    assert_eq!(m.answers()[0].ttl(), 30);

    let started = Instant::now();
    client
        .send(&query(2, "deadbeef.attacker.example.", RecordType::A))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id(), m.response_code()), (2, ResponseCode::Refused));
    assert!(started.elapsed() < Duration::from_millis(500));
    server.trigger.trigger();
    server.task.await.unwrap();
}

#[tokio::test]
async fn tcp_answers_pipelined_frames_in_order() {
    let server = start(Limits::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut both = framed(&query(7, "sidecars", RecordType::A));
    both.extend(framed(&query(8, "nope.example", RecordType::AAAA)));
    // Written in two pieces that cut a frame in half.
    let (first, second) = both.split_at(5);
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(second).await.unwrap();
    let a = read_framed(&mut stream).await.unwrap();
    let b = read_framed(&mut stream).await.unwrap();
    assert_eq!(a.id(), 7);
    assert_eq!(a_records(&a), vec!["10.213.0.2"]);
    assert_eq!((b.id(), b.response_code()), (8, ResponseCode::Refused));
    // A bad body is FORMERR and keeps the connection; a frame too short for a header closes it.
    let q = query(9, "sidecars", RecordType::A);
    stream.write_all(&framed(&q[..q.len() - 2])).await.unwrap();
    let c = read_framed(&mut stream).await.unwrap();
    assert_eq!((c.id(), c.response_code()), (9, ResponseCode::FormErr));
    stream.write_all(&framed(b"tiny")).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    server.trigger.trigger();
    server.task.await.unwrap();
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let server = start(Limits {
        tcp_idle: Duration::from_millis(300),
        max_tcp_connections: 8,
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Half a frame, then silence: closed as well.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(&framed(&query(1, "sidecars", RecordType::A))[..6])
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    server.trigger.trigger();
    server.task.await.unwrap();
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_at_once() {
    let server = start(Limits {
        tcp_idle: Duration::from_secs(30),
        max_tcp_connections: 2,
    })
    .await;
    let mut held = Vec::new();
    for id in 0..2 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&framed(&query(id, "sidecars", RecordType::A)))
            .await
            .unwrap();
        assert_eq!(read_framed(&mut s).await.unwrap().id(), id);
        held.push(s);
    }
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let _ = third
        .write_all(&framed(&query(3, "sidecars", RecordType::A)))
        .await;
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s
            .write_all(&framed(&query(4, "sidecars", RecordType::A)))
            .await;
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), read_framed(&mut s)).await {
            assert_eq!(m.id(), 4);
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.trigger.trigger();
    server.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_open_connections_and_returns_quickly() {
    let server = start(Limits::default()).await;
    let mut open = TcpStream::connect(server.addr).await.unwrap();
    open.write_all(&framed(&query(1, "sidecars", RecordType::A)))
        .await
        .unwrap();
    read_framed(&mut open).await.unwrap();
    let started = Instant::now();
    server.trigger.trigger();
    tokio::time::timeout(Duration::from_secs(2), server.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(closed_within(&mut open, Duration::from_secs(2)).await);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_refused_query_logs_one_line_with_only_the_last_two_labels() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let secret = "6170695f6b65793d73757065722d736563726574";
    let config: Config =
        sidecars_common::config::parse(r#"{"names": {"sidecars": ["10.213.0.2"]}}"#, "dns.json")
            .unwrap();
    let responder = Responder::new(&config);
    tracing::subscriber::with_default(subscriber, || {
        let q = query(
            1,
            &format!("{secret}.x1.Attacker.Example."),
            RecordType::TXT,
        );
        responder.respond(&q, dns::Transport::Udp).unwrap();
        // Answered queries log at debug: nothing at info.
        responder
            .respond(&query(2, "sidecars", RecordType::A), dns::Transport::Udp)
            .unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains(r#"rule="not-a-bottle-name""#), "{line}");
    assert!(line.contains("qtype=TXT"), "{line}");
    assert!(
        line.contains(&format!("name_len={}", secret.len() + 20)),
        "{line}"
    );
    assert!(line.contains("name_tail=attacker.example"), "{line}");
    assert!(!line.contains(secret) && !line.contains("x1"), "{line}");
    assert!(!line.contains(&secret[..8]), "{line}");
}
