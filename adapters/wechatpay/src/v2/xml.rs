//! The flat XML dialect of APIv2: `<xml><k><![CDATA[v]]></k>…</xml>`.
//!
//! Parsing is deliberately strict. WeChat only ever sends one flat level of
//! text-only children, so anything else — DOCTYPE, custom entities,
//! processing instructions, nested elements, duplicate fields, oversized
//! bodies — is refused with a typed [`Error`]. This closes XXE and
//! entity-expansion attacks (notify URLs are public) and avoids ambiguity
//! between the value a signature was checked over and the value used.
//!
//! Text and CDATA content are both accepted and concatenated, and line ends
//! are normalised (`\r\n` → `\n`) as XML 1.0 requires — the same values the
//! official SDKs' DOM/libxml/encoding-xml parsers produce, so signatures
//! verify over the same bytes they would. Values are not trimmed.
//! Attributes are ignored (WeChat sends none), as are comments; a UTF-8 BOM
//! is tolerated. Field values are kept as strings, unknown fields included.

use std::collections::BTreeMap;

use quick_xml::events::{BytesCData, BytesEnd, BytesStart, Event};
use quick_xml::{Reader, Writer};

use crate::error::{Error, Result};

/// Largest body accepted by [`parse`]: 64 KiB. Real v2 messages are a few
/// hundred bytes; the limit bounds memory and CPU spent on hostile input.
pub const MAX_XML_BYTES: usize = 64 * 1024;

/// Root element of APIv2 requests, responses and notifications.
pub const ROOT_XML: &str = "xml";

/// Parse a v2 `<xml>…</xml>` body into its fields.
pub fn parse(body: &[u8]) -> Result<BTreeMap<String, String>> {
    parse_with_root(body, ROOT_XML)
}

/// Parse a flat document whose root element must be `root` (for example the
/// `<root>` inside a decrypted refund `req_info`).
pub fn parse_with_root(body: &[u8], root: &str) -> Result<BTreeMap<String, String>> {
    if body.len() > MAX_XML_BYTES {
        return Err(Error::XmlTooLarge {
            size: body.len(),
            limit: MAX_XML_BYTES,
        });
    }
    // WeChat speaks UTF-8 only; refusing other bytes early keeps the parser's
    // view and the signature's view of the text identical.
    let text = std::str::from_utf8(body).map_err(|_| Error::Utf8)?;
    // A UTF-8 byte-order mark is legal before the document; drop it.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    Parser::new(text, root).run()
}

#[derive(PartialEq)]
enum State {
    BeforeRoot,
    InRoot,
    InField,
    AfterRoot,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    root: &'a str,
    state: State,
    /// Whether any event has been read yet (the XML declaration must be first).
    started: bool,
    field: String,
    value: String,
    out: BTreeMap<String, String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, root: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let cfg = reader.config_mut();
        // Be explicit about the safety-relevant settings rather than relying
        // on defaults that could change between quick-xml releases.
        cfg.check_end_names = true;
        cfg.allow_unmatched_ends = false;
        cfg.allow_dangling_amp = false;
        cfg.check_comments = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text_start = false;
        cfg.trim_text_end = false;
        Self {
            reader,
            root,
            state: State::BeforeRoot,
            started: false,
            field: String::new(),
            value: String::new(),
            out: BTreeMap::new(),
        }
    }

    fn malformed(&self, what: impl std::fmt::Display) -> Error {
        Error::XmlMalformed(format!(
            "{what} (at byte {})",
            self.reader.buffer_position()
        ))
    }

    fn run(mut self) -> Result<BTreeMap<String, String>> {
        loop {
            let event = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    return Err(Error::XmlMalformed(format!(
                        "{e} (at byte {})",
                        self.reader.error_position()
                    )))
                }
            };
            let first = !std::mem::replace(&mut self.started, true);
            match event {
                Event::Eof => {
                    return if self.state == State::AfterRoot {
                        Ok(self.out)
                    } else {
                        Err(self.malformed("unexpected end of document"))
                    };
                }
                Event::DocType(_) => return Err(Error::XmlForbidden("DOCTYPE")),
                Event::PI(_) => return Err(Error::XmlForbidden("processing instruction")),
                Event::Comment(_) => {} // harmless anywhere; contributes no text
                Event::Decl(_) => {
                    // Only legal as the very first thing; quick-xml does not
                    // enforce that, so do it here.
                    if !first {
                        return Err(self.malformed("misplaced XML declaration"));
                    }
                }
                Event::Start(e) => self.start(&e, false)?,
                Event::Empty(e) => self.start(&e, true)?,
                Event::End(e) => self.end(e.name().as_ref())?,
                Event::Text(t) => {
                    if self.state == State::InField {
                        self.value.push_str(&t.xml10_content());
                    } else if !t.chars().all(is_xml_space) {
                        return Err(self.malformed("text outside a field"));
                    }
                }
                Event::CData(c) => {
                    if self.state != State::InField {
                        return Err(self.malformed("CDATA outside a field"));
                    }
                    self.value.push_str(&c.xml10_content());
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(ch)) if is_xml_char(ch) => ch,
                        Ok(Some(_)) | Err(_) => {
                            return Err(self.malformed("invalid character reference"))
                        }
                        Ok(None) => match r.as_ref() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            // Anything else would need a DTD to define it.
                            _ => return Err(Error::XmlForbidden("entity reference")),
                        },
                    };
                    if self.state != State::InField {
                        return Err(self.malformed("reference outside a field"));
                    }
                    self.value.push(resolved);
                }
            }
        }
    }

    fn start(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<()> {
        let name = e.name().as_ref().to_owned();
        match self.state {
            State::BeforeRoot => {
                if name != self.root {
                    return Err(Error::XmlUnexpectedRoot {
                        expected: self.root.to_owned(),
                        found: name,
                    });
                }
                self.state = if empty {
                    State::AfterRoot
                } else {
                    State::InRoot
                };
            }
            State::InRoot => {
                if self.out.contains_key(&name) {
                    return Err(Error::XmlDuplicateField(name));
                }
                if empty {
                    self.out.insert(name, String::new());
                } else {
                    self.field = name;
                    self.value.clear();
                    self.state = State::InField;
                }
            }
            State::InField => {
                return Err(Error::XmlNested {
                    field: std::mem::take(&mut self.field),
                    child: name,
                })
            }
            State::AfterRoot => return Err(self.malformed("content after the root element")),
        }
        Ok(())
    }

    fn end(&mut self, name: &str) -> Result<()> {
        // quick-xml has already checked that `name` matches its start tag.
        match self.state {
            State::InField => {
                let field = std::mem::take(&mut self.field);
                let value = std::mem::take(&mut self.value);
                self.out.insert(field, value);
                self.state = State::InRoot;
            }
            State::InRoot if name == self.root => self.state = State::AfterRoot,
            _ => return Err(self.malformed("unexpected end tag")),
        }
        Ok(())
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// XML 1.0 `Char` production (surrogates cannot occur in a Rust `char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Conservative XML name check: ASCII letters, digits, `_`, `-`, `.`, not
/// starting with a digit, `-` or `.`. Every WeChat field name fits; colons
/// (namespaces) and non-ASCII are refused to keep rendering unambiguous.
fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Render fields as `<xml><k><![CDATA[v]]></k>…</xml>` (sorted by key, no
/// whitespace, no declaration) — the form WeChat's own examples use.
pub fn render(fields: &BTreeMap<String, String>) -> Result<String> {
    render_with_root(fields, ROOT_XML)
}

/// Like [`render`] with a different root element (e.g. `root`).
///
/// Fails if a key is not a plain XML name or a value holds a character XML
/// 1.0 cannot represent (most C0 controls). A value containing `]]>` is
/// split across two CDATA sections, which parses back to the same text.
pub fn render_with_root(fields: &BTreeMap<String, String>, root: &str) -> Result<String> {
    if !is_field_name(root) {
        return Err(Error::XmlUnrepresentable(root.to_owned()));
    }
    let mut w = Writer::new(Vec::with_capacity(64 + fields.len() * 48));
    // Writing into a Vec cannot fail.
    let io = |r: std::io::Result<()>| r.expect("writing to a Vec is infallible");
    io(w.write_event(Event::Start(BytesStart::new(root))));
    for (k, v) in fields {
        if !is_field_name(k) {
            return Err(Error::XmlUnrepresentable(k.clone()));
        }
        if !v.chars().all(is_xml_char) {
            return Err(Error::XmlUnrepresentable(k.clone()));
        }
        io(w.write_event(Event::Start(BytesStart::new(k.as_str()))));
        for part in BytesCData::escaped(v) {
            io(w.write_event(Event::CData(part)));
        }
        io(w.write_event(Event::End(BytesEnd::new(k.as_str()))));
    }
    io(w.write_event(Event::End(BytesEnd::new(root))));
    // Only &str content went in.
    Ok(String::from_utf8(w.into_inner()).expect("UTF-8 in, UTF-8 out"))
}

/// The acknowledgement WeChat expects after a v2 pay notification, byte for
/// byte. Anything else (including a bare `success`) makes WeChat retry.
pub const NOTIFY_ACK_SUCCESS: &str =
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_cdata_and_plain_text() {
        let body = b"<xml>\n  <appid><![CDATA[wx2421b1c4370ec43b]]></appid>\n  <total_fee>1</total_fee>\n  <body><![CDATA[a&b <c>]]></body>\n  <note>x &amp; y &lt;z&gt; &#x4e2d;&#25991;</note>\n</xml>\n";
        let m = parse(body).unwrap();
        assert_eq!(
            m,
            map(&[
                ("appid", "wx2421b1c4370ec43b"),
                ("total_fee", "1"),
                ("body", "a&b <c>"),
                ("note", "x & y <z> 中文"),
            ])
        );
    }

    #[test]
    fn empty_fields_and_empty_root() {
        assert_eq!(
            parse(b"<xml><a></a><b/><c><![CDATA[]]></c></xml>").unwrap(),
            map(&[("a", ""), ("b", ""), ("c", "")])
        );
        assert!(parse(b"<xml/>").unwrap().is_empty());
        assert!(parse(b"<xml></xml>").unwrap().is_empty());
    }

    #[test]
    fn declaration_and_comments_allowed() {
        let m = parse(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi --><xml><a>1<!--c-->2</a></xml><!-- bye -->").unwrap();
        assert_eq!(m, map(&[("a", "12")]));
    }

    #[test]
    fn utf8_bom_is_tolerated() {
        assert_eq!(
            parse("\u{FEFF}<xml><a>1</a></xml>".as_bytes()).unwrap(),
            map(&[("a", "1")])
        );
    }

    #[test]
    fn attributes_are_ignored() {
        assert_eq!(
            parse(b"<xml lang=\"zh\"><a x=\"y\">1</a></xml>").unwrap(),
            map(&[("a", "1")])
        );
    }

    #[test]
    fn values_not_trimmed_and_line_ends_normalised() {
        let m = parse(b"<xml><a> x </a><b><![CDATA[1\r\n2]]></b><c>3\r\n4</c></xml>").unwrap();
        assert_eq!(m["a"], " x ");
        assert_eq!(m["b"], "1\n2");
        assert_eq!(m["c"], "3\n4");
    }

    #[test]
    fn mixed_cdata_and_text_concatenate() {
        let m = parse(b"<xml><a>x<![CDATA[<y>]]>z</a></xml>").unwrap();
        assert_eq!(m["a"], "x<y>z");
    }

    #[test]
    fn rejects_doctype_and_xxe() {
        let xxe = br#"<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><a>&xxe;</a></xml>"#;
        assert!(matches!(parse(xxe), Err(Error::XmlForbidden("DOCTYPE"))));
        let bomb = br#"<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><a>&b;</a></xml>"#;
        assert!(matches!(parse(bomb), Err(Error::XmlForbidden(_))));
    }

    #[test]
    fn rejects_undefined_entity_without_doctype() {
        assert!(matches!(
            parse(b"<xml><a>&xxe;</a></xml>"),
            Err(Error::XmlForbidden("entity reference"))
        ));
    }

    #[test]
    fn rejects_processing_instruction() {
        assert!(matches!(
            parse(b"<xml><?php echo 1; ?><a>1</a></xml>"),
            Err(Error::XmlForbidden(_))
        ));
    }

    #[test]
    fn rejects_nested_elements() {
        match parse(b"<xml><a><b>1</b></a></xml>") {
            Err(Error::XmlNested { field, child }) => {
                assert_eq!(field, "a");
                assert_eq!(child, "b");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"<xml><a>1<b/></a></xml>"),
            Err(Error::XmlNested { .. })
        ));
    }

    #[test]
    fn rejects_duplicates() {
        assert!(matches!(
            parse(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>"),
            Err(Error::XmlDuplicateField(f)) if f == "total_fee"
        ));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"   ",
            b"not xml",
            b"<xml>",
            b"<xml><a>1</a>",
            b"<xml><a>1</b></xml>",
            b"<xml><a>1</a></xml><xml></xml>",
            b"<xml><a>1</a></xml>trailing",
            b"<xml>stray<a>1</a></xml>",
            b"<xml><![CDATA[x]]></xml>",
            b"<xml><a>a & b</a></xml>",
            b"<xml><a>&#0;</a></xml>",
            b"<xml><a>1</a></xml></xml>",
            b"\xff\xfe<xml/>",
            b"<!-- c --><?xml version=\"1.0\"?><xml/>",
            b"<xml><?xml version=\"1.0\"?></xml>",
        ] {
            let r = parse(bad);
            assert!(
                r.is_err(),
                "accepted {:?}: {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_wrong_root() {
        assert!(matches!(
            parse(b"<root><a>1</a></root>"),
            Err(Error::XmlUnexpectedRoot { .. })
        ));
        assert_eq!(
            parse_with_root(b"<root><a>1</a></root>", "root").unwrap(),
            map(&[("a", "1")])
        );
    }

    #[test]
    fn size_limit() {
        let mut body = b"<xml><a>".to_vec();
        let closing = b"</a></xml>";
        body.resize(MAX_XML_BYTES - closing.len(), b'x');
        body.extend_from_slice(closing);
        assert_eq!(body.len(), MAX_XML_BYTES);
        assert!(parse(&body).is_ok());
        body.insert(8, b'x');
        assert!(matches!(
            parse(&body),
            Err(Error::XmlTooLarge { size, limit: MAX_XML_BYTES }) if size == MAX_XML_BYTES + 1
        ));
    }

    #[test]
    fn render_exact_bytes() {
        let m = map(&[("return_msg", "OK"), ("return_code", "SUCCESS")]);
        assert_eq!(
            render(&m).unwrap(),
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert_eq!(render(&m).unwrap(), NOTIFY_ACK_SUCCESS);
        assert_eq!(render(&BTreeMap::new()).unwrap(), "<xml></xml>");
        assert_eq!(
            render(&map(&[("a", "")])).unwrap(),
            "<xml><a><![CDATA[]]></a></xml>"
        );
    }

    #[test]
    fn render_round_trips_awkward_values() {
        let m = map(&[
            ("a", "x]]>y"),
            ("b", "]]>]]>"),
            ("c", "<&>\"'"),
            ("d", "中文 😀"),
            ("e", "tab\tnl\n"),
        ]);
        let xml = render(&m).unwrap();
        assert!(
            xml.contains("<a><![CDATA[x]]]]><![CDATA[>y]]></a>"),
            "{xml}"
        );
        assert_eq!(parse(xml.as_bytes()).unwrap(), m);
        let root = render_with_root(&m, "root").unwrap();
        assert!(root.starts_with("<root>") && root.ends_with("</root>"));
        assert_eq!(parse_with_root(root.as_bytes(), "root").unwrap(), m);
    }

    #[test]
    fn render_rejects_unrepresentable() {
        assert!(render(&map(&[("a b", "1")])).is_err());
        assert!(render(&map(&[("1a", "1")])).is_err());
        assert!(render(&map(&[("", "1")])).is_err());
        assert!(render(&map(&[("a", "\u{0}")])).is_err());
        assert!(render(&map(&[("a", "\u{1b}")])).is_err());
        assert!(render_with_root(&BTreeMap::new(), "x y").is_err());
    }
}
