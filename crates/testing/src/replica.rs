//! The real `service-ca run` binary as a child process against a testenv control plane, for the
//! tests that kill, freeze and restart it (docs/reliability.md): spawned with the admin
//! kubeconfig, its output in a log file, signalled by pid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One `service-ca run` process.
pub struct Replica {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Its Lease identity.
    pub identity: String,
    /// Its probe server (/readyz, /healthz).
    pub admin: SocketAddr,
    /// Its combined stdout and stderr (JSON lines).
    pub log: PathBuf,
    /// When it was spawned.
    pub spawned: Instant,
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Replica {
    /// Spawns `binary run` against `kubeconfig` as `identity`, with `args` after the standard
    /// ones (JSON logs, a free admin port); its output is appended to `log`.
    pub fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        identity: &str,
        args: &[&str],
        log: &Path,
    ) -> Replica {
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the replica's log file");
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--log-format=json")
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--identity")
            .arg(identity)
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn service-ca");
        let pid = child.id().expect("a pid");
        Replica {
            child,
            pid,
            identity: identity.into(),
            admin,
            log: log.into(),
            spawned: Instant::now(),
        }
    }

    /// Sends `signal` (a `kill` name: KILL, STOP, CONT, TERM).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid);
    }

    /// Waits until every thread of the process is stopped (after SIGSTOP): a timestamp taken
    /// afterwards is later than anything the process did before the freeze.
    pub async fn wait_stopped(&self) {
        let thread_stopped = |stat: std::io::Result<String>| {
            stat.ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('T'))
                })
                .unwrap_or(true) // gone: it does nothing more either
        };
        for _ in 0..5000 {
            let all = std::fs::read_dir(format!("/proc/{}/task", self.pid)).map(|tasks| {
                tasks
                    .flatten()
                    .all(|t| thread_stopped(std::fs::read_to_string(t.path().join("stat"))))
            });
            if all.unwrap_or(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("process {} did not stop within 5 s", self.pid);
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(mut self) {
        self.signal("KILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM; the exit status within `timeout` (None: it did not exit, and was killed).
    pub async fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until /readyz answers 200 (a follower is ready too); fails if it exits first.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        crate::container::wait_until_ready(&mut self.child, self.admin, "/readyz", timeout).await
    }

    /// Resident set size, CPU time (user + system) so far, open fds and threads, from /proc.
    pub fn usage(&self) -> Option<Usage> {
        usage(self.pid)
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// What a process uses, read from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Resident set size, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
    /// CPU time, user + system.
    pub cpu: Duration,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
    /// OS threads.
    pub threads: u64,
}

/// [`Usage`] of process `pid` (None once it is gone).
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Usage {
        rss: kib("VmRSS:")?,
        peak_rss: kib("VmHWM:")?,
        cpu: Duration::from_millis(total * 10),
        open_fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64,
        threads: status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())?,
    })
}

/// A small deterministic generator (SplitMix64): the tests print their seed, and a failure is
/// replayed by setting it again.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The seed from environment variable `var`, else from the clock.
    pub fn seed_from_env(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[low, high)`.
    pub fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span.max(1)))
    }
}
