//! Raw floors for S1: a UDP echo and a TCP (NODELAY) echo on loopback, with
//! blocking sockets on plain threads on both sides: the least any transport
//! on this host can do for one round trip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Echo servers on ephemeral loopback ports, each on its own thread. They
/// live until the process exits (the threads block in recv).
pub struct Echo {
    pub udp: std::net::SocketAddr,
    pub tcp: std::net::SocketAddr,
}

impl Echo {
    pub fn start() -> std::io::Result<Echo> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let udp_addr = udp.local_addr()?;
        std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            })?;
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let tcp_addr = tcp.local_addr()?;
        std::thread::Builder::new()
            .name("tcp-echo".into())
            .spawn(move || {
                for s in tcp.incoming().flatten() {
                    let _ = s.set_nodelay(true);
                    std::thread::spawn(move || {
                        let mut s = s;
                        let mut buf = [0u8; 2048];
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            })?;
        Ok(Echo {
            udp: udp_addr,
            tcp: tcp_addr,
        })
    }
}

/// `rally load echo-server`: serves both echoes and announces them with
/// Rally's `listening` line (no certificate: an empty `cert_sha256`), so
/// `rally::launch` starts it as it starts a server, until killed.
pub fn serve_forever() -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let line = rally::server::Listening {
        udp: echo.udp,
        tcp: echo.tcp,
        cert_sha256: String::new(),
    };
    println!("{}", line.json());
    loop {
        std::thread::park();
    }
}

/// Blocking UDP round trips; returns nanoseconds per round trip and the
/// number lost (no echo within 1 s).
pub fn udp_round_trips(
    to: std::net::SocketAddr,
    n: usize,
    size: usize,
) -> std::io::Result<(Vec<u64>, u64)> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut out = Vec::with_capacity(n);
    let mut lost = 0;
    let mut msg = vec![0u8; size.max(8)];
    let mut buf = [0u8; 2048];
    for i in 0..n as u64 {
        msg[..8].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        s.send(&msg)?;
        loop {
            match s.recv(&mut buf) {
                Ok(k) if k >= 8 && buf[..8] == msg[..8] => {
                    out.push(t0.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    Ok((out, lost))
}

/// Blocking TCP round trips over one NODELAY connection.
pub fn tcp_round_trips(
    to: std::net::SocketAddr,
    n: usize,
    size: usize,
) -> std::io::Result<Vec<u64>> {
    let mut s = TcpStream::connect(to)?;
    s.set_nodelay(true)?;
    let msg = vec![7u8; size.max(1)];
    let mut buf = vec![0u8; msg.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut buf)?;
        out.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(out)
}
