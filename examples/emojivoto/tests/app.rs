//! Runs the four real binaries on loopback and uses the app over HTTP like a visitor:
//! list, vote, leaderboard, the failing doughnut, and the vote bot adding votes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The app's processes; whatever is still running is killed on drop, even on failure.
#[derive(Default)]
struct Processes(Vec<(&'static str, Child)>);

impl Processes {
    /// Starts `binary` with `env`; returns the port it logs as listening on, if `listens`.
    fn start(&mut self, binary: &'static str, env: &[(&str, String)], listens: bool) -> u16 {
        let mut child = Command::new(binary_path(binary))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start {binary}: {err}"));
        let stderr = child.stderr.take().expect("piped stderr");
        self.0.push((binary, child));
        let (port_tx, port_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{binary}] {line}");
                let addr = line.split_once("listening addr=").map(|(_, addr)| addr);
                if let Some(port) = addr.and_then(|a| a.rsplit_once(':')?.1.trim().parse().ok()) {
                    let _ = port_tx.send(port);
                }
            }
        });
        if !listens {
            return 0;
        }
        port_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{binary} did not log its listening address"))
    }

    /// Sends SIGTERM to each process, last started first, and returns how each exited.
    fn terminate(&mut self) -> Vec<(&'static str, ExitStatus)> {
        let mut exits = Vec::new();
        for (name, child) in self.0.iter_mut().rev() {
            let term = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            assert!(term.is_ok_and(|s| s.success()), "kill -TERM {name}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    exits.push((*name, status));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        exits
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn binary_path(binary: &str) -> &'static str {
    match binary {
        "emojivoto-emoji-svc" => env!("CARGO_BIN_EXE_emojivoto-emoji-svc"),
        "emojivoto-voting-svc" => env!("CARGO_BIN_EXE_emojivoto-voting-svc"),
        "emojivoto-web" => env!("CARGO_BIN_EXE_emojivoto-web"),
        "emojivoto-vote-bot" => env!("CARGO_BIN_EXE_emojivoto-vote-bot"),
        other => panic!("no binary {other}"),
    }
}

/// `GET path` on 127.0.0.1:port; returns the status code and the JSON body (Null if not JSON).
fn get(port: u16, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to web");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Total votes on the leaderboard, and the votes for `shortcode`.
fn votes(web: u16, shortcode: &str) -> (u64, u64) {
    let (status, board) = get(web, "/api/leaderboard");
    assert_eq!(status, 200, "{board}");
    let rows = board.as_array().expect("leaderboard is an array");
    let count = |row: &Value| row["votes"].as_u64().unwrap_or_default();
    let mine = rows.iter().find(|r| r["shortcode"] == shortcode).map(count);
    (rows.iter().map(count).sum(), mine.unwrap_or_default())
}

#[test]
fn the_app_counts_votes_and_the_bot_votes() {
    let mut app = Processes::default();
    let port0 = || "0".to_string();
    let emoji = app.start("emojivoto-emoji-svc", &[("GRPC_PORT", port0())], true);
    let voting = app.start("emojivoto-voting-svc", &[("GRPC_PORT", port0())], true);
    let web = app.start(
        "emojivoto-web",
        &[
            ("WEB_PORT", port0()),
            ("EMOJISVC_HOST", format!("127.0.0.1:{emoji}")),
            ("VOTINGSVC_HOST", format!("127.0.0.1:{voting}")),
        ],
        true,
    );

    assert_eq!(get(web, "/healthz").0, 200);
    let (status, list) = get(web, "/api/list");
    assert_eq!(status, 200);
    let list = list.as_array().expect("list is an array");
    assert!(list.len() >= 25, "{list:?}");
    assert!(list
        .iter()
        .any(|e| e["shortcode"] == ":joy:" && e["unicode"] == "😂"));

    assert_eq!(
        get(web, "/api/vote?choice=:joy:"),
        (
            200,
            serde_json::json!({"unicode": "😂", "shortcode": ":joy:"})
        )
    );
    assert_eq!(get(web, "/api/vote?choice=%3Ajoy%3A").0, 200);
    assert_eq!(votes(web, ":joy:"), (2, 2));
    let (status, body) = get(web, "/api/leaderboard");
    assert_eq!((status, &body[0]["unicode"]), (200, &Value::from("😂")));

    let (status, body) = get(web, "/api/vote?choice=:doughnut:");
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("ERROR")),
        "{body}"
    );
    assert_eq!(get(web, "/api/vote?choice=:no-such-emoji:").0, 404);
    assert_eq!(get(web, "/api/vote").0, 400);
    assert_eq!(get(web, "/nowhere").0, 404);
    assert_eq!(votes(web, ":joy:"), (2, 2), "failed votes are not counted");

    let bot_env = [
        ("WEB_HOST", format!("127.0.0.1:{web}")),
        ("VOTE_BOT_RPS", "20".into()),
    ];
    app.start("emojivoto-vote-bot", &bot_env, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while votes(web, ":joy:").0 < 12 {
        assert!(
            Instant::now() < deadline,
            "the bot added no votes: {:?}",
            votes(web, ":joy:")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let exits = app.terminate();
    assert_eq!(exits.len(), 4, "all four stop on SIGTERM: {exits:?}");
    assert!(
        exits.iter().all(|(_, status)| status.success()),
        "{exits:?}"
    );
}
