//! WebTransport over HTTP/3 in the dialect of every draft a shipping client
//! speaks (draft-ietf-webtrans-http3): the SETTINGS the server adds to h3's
//! own, the `:protocol` tokens it accepts, and its answer to
//! `WT-Available-Protocols`. Pure: no I/O; `quic.rs` applies it.
//!
//! Which client speaks which draft, and why the flow-control settings are
//! sent although one session per connection does not need them, is in
//! docs/SAFARI.md.

use h3::ext::Protocol;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The settings Rally sends after h3's own. h3 already sends
/// MAX_FIELD_SECTION_SIZE (0x6), ENABLE_CONNECT_PROTOCOL (0x8) = 1,
/// H3_DATAGRAM (0x33) = 1, a grease setting, and draft-02's
/// SETTINGS_ENABLE_WEBTRANSPORT (0x2b603742) = 1 (draft-02 §8.2) with
/// drafts 04–06's WEBTRANSPORT_MAX_SESSIONS (0x2b603743) = 1 (§8.2 of the
/// draft-06 text), which is all Chromium needs.
///
/// The values are what Rally allows: one session per connection, one
/// bidirectional stream per session, no unidirectional stream, and no
/// session data limit of its own (QUIC's flow control is the limit).
pub const SETTINGS: &[(u64, u64)] = &[
    // SETTINGS_WEBTRANSPORT_MAX_SESSIONS, drafts 07–12: "both the client and
    // the server MUST send a SETTINGS_WEBTRANSPORT_MAX_SESSIONS value greater
    // than "0"" (-08 §3.1; value 0xc671706a, -08 §8.2, -12 §9.2). Also what
    // the wtransport crate sends.
    (WEBTRANSPORT_MAX_SESSIONS_DRAFT07, 1),
    // SETTINGS_WT_MAX_SESSIONS, drafts 13–14: servers send it "with a value
    // greater than "0"" (-14 §3.1; value 0x14e9cd29, -13 and -14 §9.2). 1,
    // not more: above 1 it declares flow control (-13 §5.1, -14 §5.1), and
    // Safari is reported to refuse a value above 1 without the initial
    // limits below (webtransport-go issue 355).
    (WT_MAX_SESSIONS, 1),
    // SETTINGS_WT_ENABLED, drafts 15–16: "A value of "1" indicates support"
    // and clients treat a larger value as H3_SETTINGS_ERROR (-16 §3.1;
    // value 0x2c7cf000, -15 and -16 §9.2).
    (WT_ENABLED, 1),
    // The initial session flow-control limits, drafts 13–16 (values 0x2b65,
    // 0x2b64, 0x2b61: -13 to -16 §9.2). Sending any of them non-zero
    // declares flow control, allowed even with a single session (-14 §5.1,
    // -15 §5.1). Sent because Safari 26.x is reported not to open a stream
    // or send on one without this credit (fails-components/webtransport
    // issue 490, nghttp3 PR 442). The limits are lifetime totals (-14
    // §5.6.2, §5.4) that Rally never raises, so they are what Rally allows
    // for a whole session.
    //
    // SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI: the one reliable stream.
    (WT_INITIAL_MAX_STREAMS_BIDI, 1),
    // SETTINGS_WT_INITIAL_MAX_STREAMS_UNI: none are used (PROTOCOL.md §1).
    // 0 is the default; sent anyway, as the configuration Safari was
    // reported to accept sent all three (webtransport-go issue 355).
    (WT_INITIAL_MAX_STREAMS_UNI, 0),
    // SETTINGS_WT_INITIAL_MAX_DATA: 2^60 bytes, never reached, so no
    // WT_MAX_DATA capsule is ever needed; the value webtransport-go 0.11
    // sent.
    (WT_INITIAL_MAX_DATA, 1 << 60),
];

/// SETTINGS_WEBTRANSPORT_MAX_SESSIONS of drafts 07–12.
pub const WEBTRANSPORT_MAX_SESSIONS_DRAFT07: u64 = 0xc671_706a;
/// SETTINGS_WT_MAX_SESSIONS of drafts 13–14.
pub const WT_MAX_SESSIONS: u64 = 0x14e9_cd29;
/// SETTINGS_WT_ENABLED of drafts 15–16.
pub const WT_ENABLED: u64 = 0x2c7c_f000;
/// SETTINGS_WT_INITIAL_MAX_STREAMS_UNI, drafts 13–16.
pub const WT_INITIAL_MAX_STREAMS_UNI: u64 = 0x2b64;
/// SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, drafts 13–16.
pub const WT_INITIAL_MAX_STREAMS_BIDI: u64 = 0x2b65;
/// SETTINGS_WT_INITIAL_MAX_DATA, drafts 13–16.
pub const WT_INITIAL_MAX_DATA: u64 = 0x2b61;

/// Whether a CONNECT's `:protocol` asks for WebTransport: "webtransport"
/// (drafts up to 14, -14 §3.2; what Safari 26.5 was seen sending,
/// webtransport-go PR 280) or "webtransport-h3" (from draft 15, -15 §3.2,
/// -16 §3.2).
pub fn is_webtransport(protocol: Option<&Protocol>) -> bool {
    protocol.is_some_and(|p| *p == Protocol::WEB_TRANSPORT || *p == Protocol::WEB_TRANSPORT_H3)
}

/// The application protocol Rally speaks over a session, for
/// `WT-Available-Protocols` (PROTOCOL.md §1).
pub const APPLICATION_PROTOCOL: &str = "rally.v2";

const WT_AVAILABLE_PROTOCOLS: HeaderName = HeaderName::from_static("wt-available-protocols");
const WT_PROTOCOL: HeaderName = HeaderName::from_static("wt-protocol");

/// The headers to add to a 200 accepting a session whose CONNECT carried
/// `request`'s headers: `WT-Protocol: "rally.v2"` when the client offered
/// it in `WT-Available-Protocols`, else none.
///
/// The server "MAY include a `WT-Protocol` field" and then "MUST include a
/// single choice from the client's list" (-14 §3.3, -16 §3.3). Rally does
/// not require negotiation, so a list without its protocol, or a field that
/// is absent or ignored, still gets the session, without `WT-Protocol`.
pub fn response_headers(request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(value) = negotiate(request.get_all(WT_AVAILABLE_PROTOCOLS)) {
        out.insert(WT_PROTOCOL, value);
    }
    out
}

/// The `WT-Protocol` value answering these `WT-Available-Protocols` field
/// lines, if they offer [`APPLICATION_PROTOCOL`].
///
/// The field is an RFC 9651 List; lines are combined into one (RFC 9651
/// §4.2). From draft 13 its members are Strings, and "any value type other
/// than String MUST be treated as an error that causes the entire field to
/// be ignored"; parameters are ignored (-14 §3.3). Drafts 10–12 made it a
/// List of Tokens answered by a Token (-12 §3.4); such a list is answered in
/// kind, which a newer client would ignore (-14 §3.3), as it ignores the
/// field.
fn negotiate<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for line in lines {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(line.as_bytes());
    }
    if joined.is_empty() {
        return None;
    }
    let list = sfv::Parser::new(&joined).parse_list().ok()?;
    let mut strings = 0;
    let mut tokens = 0;
    let mut offered = false;
    for member in &list {
        let sfv::ListEntry::Item(item) = member else {
            return None;
        };
        let name = match &item.bare_item {
            sfv::BareItem::String(s) => {
                strings += 1;
                s.as_str()
            }
            sfv::BareItem::Token(t) => {
                tokens += 1;
                t.as_str()
            }
            _ => return None,
        };
        offered |= name == APPLICATION_PROTOCOL;
    }
    if !offered || (strings > 0 && tokens > 0) {
        return None;
    }
    // Both forms are valid field values: quoted for a String, bare for a
    // Token (APPLICATION_PROTOCOL is a valid sf-token).
    let value = if strings > 0 {
        format!("\"{APPLICATION_PROTOCOL}\"")
    } else {
        APPLICATION_PROTOCOL.to_owned()
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(lines: &[&str]) -> Option<String> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).unwrap())
            .collect();
        negotiate(&values).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn the_protocol_name_follows_the_wire_version() {
        assert_eq!(
            APPLICATION_PROTOCOL,
            format!("rally.v{}", crate::protocol::PROTOCOL_VERSION)
        );
    }

    #[test]
    fn an_offered_string_is_chosen_as_a_string() {
        assert_eq!(answer(&[r#""rally.v2""#]).as_deref(), Some(r#""rally.v2""#));
        assert_eq!(
            answer(&[r#""chat", "rally.v2""#]).as_deref(),
            Some(r#""rally.v2""#)
        );
        // Parameters are ignored (-14 §3.3), and so is whitespace.
        assert_eq!(
            answer(&[r#"  "x";q=1,"rally.v2";a=?0 "#]).as_deref(),
            Some(r#""rally.v2""#)
        );
        // Field lines are one list (RFC 9651 §4.2).
        assert_eq!(
            answer(&[r#""chat""#, r#""rally.v2""#]).as_deref(),
            Some(r#""rally.v2""#)
        );
    }

    #[test]
    fn a_token_list_of_drafts_10_to_12_is_answered_with_a_token() {
        assert_eq!(answer(&["rally.v2"]).as_deref(), Some("rally.v2"));
        assert_eq!(answer(&["chat, rally.v2"]).as_deref(), Some("rally.v2"));
    }

    #[test]
    fn no_answer_without_the_protocol() {
        assert_eq!(answer(&[]), None);
        assert_eq!(answer(&[r#""chat""#]), None);
        assert_eq!(answer(&[r#""rally.v1", "rally.v3""#]), None);
        assert_eq!(answer(&[r#""RALLY.V2""#]), None);
    }

    #[test]
    fn a_field_with_another_type_or_a_syntax_error_is_ignored() {
        for bad in [
            r#""rally.v2", 2"#,
            r#""rally.v2", ("x" "y")"#,
            r#""rally.v2", :cmFsbHk=:"#,
            r#""rally.v2", ?1"#,
            r#""rally.v2", rally.v2"#,
            r#""rally.v2"#,
            r#""rally.v2",,"#,
            "",
        ] {
            assert_eq!(answer(&[bad]), None, "{bad}");
        }
    }

    #[test]
    fn response_headers_carry_wt_protocol_only_when_chosen() {
        let mut req = HeaderMap::new();
        assert!(response_headers(&req).is_empty());
        req.insert(
            WT_AVAILABLE_PROTOCOLS,
            HeaderValue::from_static(r#""a", "rally.v2""#),
        );
        let out = response_headers(&req);
        assert_eq!(out.get("wt-protocol").unwrap(), r#""rally.v2""#);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn both_upgrade_tokens_are_webtransport() {
        assert!(is_webtransport(Some(&Protocol::WEB_TRANSPORT)));
        assert!(is_webtransport(Some(&Protocol::WEB_TRANSPORT_H3)));
        assert!(!is_webtransport(Some(&Protocol::CONNECT_UDP)));
        assert!(!is_webtransport(None));
    }

    #[test]
    fn settings_are_distinct_and_fit_the_frame_with_h3s_own() {
        let mut ids: Vec<u64> = SETTINGS.iter().map(|(id, _)| *id).collect();
        // h3's own (config.rs), grease aside.
        ids.extend([0x6, 0x8, 0x33, 0x2b60_3742, 0x2b60_3743]);
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "a setting id repeated (RFC 9114 §7.2.4)");
        // The vendored h3's frame holds 16, grease included.
        assert!(n < 16);
        // Values are QUIC varints.
        assert!(SETTINGS.iter().all(|(id, v)| *id < 1 << 62 && *v < 1 << 62));
    }
}
