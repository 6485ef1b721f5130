//! What a packet says about connections: pure. The forwarder shows it every
//! packet it carries; this module recognises the ones that open a
//! connection, so the lab can count connections on the wire whatever the
//! client (TCP: a SYN without ACK; QUIC: a client's Initial packet,
//! RFC 9000 §17.2.2). IPv4 only: the lab link has IPv6 off.

/// The transport of a connection being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Quic,
}

/// A connection attempt seen on the wire: the protocol and the sender's
/// port. A retransmitted SYN or Initial names the same flow again, so a
/// caller counts distinct flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opening {
    pub proto: Proto,
    pub src_port: u16,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The connection `packet` (an IPv4 packet) opens, if it opens one: a TCP
/// segment with SYN and no ACK, or a UDP datagram whose first QUIC packet
/// has a long header of type Initial (QUIC version 1 or 2).
pub fn opening(packet: &[u8]) -> Option<Opening> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    // A fragment other than the first carries no transport header.
    let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    if ihl < 20 || frag & 0x1fff != 0 {
        return None;
    }
    let l4 = packet.get(ihl..)?;
    let src_port = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    match packet[9] {
        TCP => {
            let flags = *l4.get(13)?;
            (flags & SYN != 0 && flags & ACK == 0).then_some(Opening {
                proto: Proto::Tcp,
                src_port,
            })
        }
        UDP => {
            let quic = l4.get(8..)?;
            let h = *quic.first()?;
            let version = u32::from_be_bytes(quic.get(1..5)?.try_into().ok()?);
            // Long header (0x80) with the fixed bit (0x40); the type bits
            // say Initial: 0b00 in version 1 (RFC 9000 §17.2), 0b01 in
            // version 2 (RFC 9369 §3.2).
            let kind = (h >> 4) & 0x03;
            let initial = match version {
                1 => kind == 0,
                0x6b33_43cf => kind == 1,
                _ => false,
            };
            (h & 0xc0 == 0xc0 && initial).then_some(Opening {
                proto: Proto::Quic,
                src_port,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(port: u16, flags: u8) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[..2].copy_from_slice(&port.to_be_bytes());
        h[2..4].copy_from_slice(&4433u16.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        ipv4(TCP, &h)
    }

    fn udp(port: u16, quic: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 8];
        h[..2].copy_from_slice(&port.to_be_bytes());
        h.extend_from_slice(quic);
        ipv4(UDP, &h)
    }

    #[test]
    fn a_syn_opens_a_tcp_connection_and_nothing_else_in_tcp_does() {
        assert_eq!(
            opening(&tcp(40000, SYN)),
            Some(Opening {
                proto: Proto::Tcp,
                src_port: 40000
            })
        );
        assert_eq!(opening(&tcp(4433, SYN | ACK)), None);
        assert_eq!(opening(&tcp(40000, ACK)), None);
        assert_eq!(opening(&tcp(40000, 0x18)), None, "PSH ACK");
    }

    #[test]
    fn a_quic_initial_opens_a_quic_connection() {
        let initial = [0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            opening(&udp(50000, &initial)),
            Some(Opening {
                proto: Proto::Quic,
                src_port: 50000
            })
        );
        // Handshake (type 2), 0-RTT (1) and short headers do not.
        let mut handshake = initial;
        handshake[0] = 0xe3;
        assert_eq!(opening(&udp(50000, &handshake)), None);
        let mut zero_rtt = initial;
        zero_rtt[0] = 0xd3;
        assert_eq!(opening(&udp(50000, &zero_rtt)), None);
        assert_eq!(opening(&udp(50000, &[0x43, 1, 2, 3, 4, 5])), None);
        // Version 2 numbers its Initial 0b01.
        let v2 = [0xd3, 0x6b, 0x33, 0x43, 0xcf, 0];
        assert!(opening(&udp(50000, &v2)).is_some());
    }

    #[test]
    fn truncated_fragmented_and_foreign_packets_open_nothing() {
        let p = tcp(40000, SYN);
        for n in 0..p.len() - 6 {
            let _ = opening(&p[..n]);
        }
        assert_eq!(opening(&p[..25]), None);
        let mut frag = p.clone();
        frag[7] = 8;
        assert_eq!(opening(&frag), None);
        let mut v6 = p;
        v6[0] = 0x60;
        assert_eq!(opening(&v6), None);
        assert_eq!(opening(&ipv4(1, &[8, 0, 0, 0])), None, "ICMP");
    }
}
