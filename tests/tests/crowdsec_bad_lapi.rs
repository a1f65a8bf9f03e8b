//! The bouncer's client against a Local API that misbehaves: a small TCP server on
//! loopback stands in for it (the one stand-in these tests allow), answering garbage,
//! 403, 500 "database is locked", something that is not HTTP, an oversized body, or
//! nothing at all; and a port where nothing listens. Each is a clear error of its own
//! kind (a metrics label), never a panic, and never a decision: nothing is applied from
//! a bad body. No root needed.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use sip_filter::crowdsec::{
    api::{HttpLapi, Lapi, LapiError, MAX_BODY_BYTES},
    settings::CrowdsecSettings,
};

fn settings(url: String) -> CrowdsecSettings {
    CrowdsecSettings {
        api_url: url,
        api_key: "test-key".into(),
        update_frequency: Duration::from_secs(1),
        resync_frequency: Duration::from_secs(10),
        timeout: Duration::from_millis(800),
        scopes: vec!["ip".into(), "range".into()],
        origins: Vec::new(),
        scenarios_containing: Vec::new(),
        scenarios_not_containing: Vec::new(),
        machine: None,
    }
}

/// Serves one connection with `answer` (after reading the request), on a thread.
fn serve_once(answer: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(&answer);
        // Keep the connection until the client is done (a silent server: forever).
        let mut rest = [0u8; 64];
        let _ = stream.read(&mut rest);
    });
    url
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn pull(url: String) -> LapiError {
    let mut lapi = HttpLapi::new(&settings(url));
    match lapi.pull(true) {
        Ok(stream) => panic!("a bad answer gave decisions: {stream:?}"),
        Err(e) => e,
    }
}

#[test]
fn each_bad_answer_is_a_clear_error() {
    let garbage = pull(serve_once(http("200 OK", "<html>502 Bad Gateway</html>")));
    assert_eq!(garbage.kind(), "malformed", "{garbage}");
    assert!(
        garbage.to_string().contains("not a decision stream"),
        "{garbage}"
    );

    // Half a stream: refused whole, nothing applied from it.
    let cut = pull(serve_once(http(
        "200 OK",
        r#"{"deleted":null,"new":[{"duration":"1h","id":1,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.1"},{"dur"#,
    )));
    assert_eq!(cut.kind(), "malformed", "{cut}");

    let forbidden = pull(serve_once(http(
        "403 Forbidden",
        r#"{"message":"access forbidden"}"#,
    )));
    assert_eq!(forbidden.kind(), "forbidden", "{forbidden}");
    assert!(
        forbidden.to_string().contains("cscli bouncers"),
        "{forbidden}"
    );

    let locked = pull(serve_once(http(
        "500 Internal Server Error",
        r#"{"message":"database is locked"}"#,
    )));
    assert_eq!(locked.kind(), "status", "{locked}");
    assert!(locked.to_string().contains("HTTP 500"), "{locked}");
    assert!(
        locked.to_string().contains("database is locked"),
        "{locked}"
    );

    let not_http = pull(serve_once(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()));
    assert!(
        matches!(not_http.kind(), "malformed" | "unreachable"),
        "{not_http}"
    );

    let huge = pull(serve_once(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{{\"new\":[",
            MAX_BODY_BYTES * 2
        )
        .into_bytes(),
    ));
    assert_eq!(huge.kind(), "too_large", "{huge}");

    // Accepts, never answers: the timeout ends it.
    let start = Instant::now();
    let silent = pull(serve_once(Vec::new()));
    assert_eq!(silent.kind(), "timeout", "{silent}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Nothing listens.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let down = pull(format!("http://127.0.0.1:{port}"));
    assert_eq!(down.kind(), "unreachable", "{down}");
    assert!(down.to_string().contains("cannot reach"), "{down}");
    drop(TcpStream::connect(("127.0.0.1", port)).err());
}
