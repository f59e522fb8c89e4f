//! APIv2's trade bill: `POST /pay/downloadbill`, signed like every v2 call. The answer is the
//! bill itself (gzip, as asked with `tar_type=GZIP`) — unsigned and without a hash, so the
//! bill's own summary is its only check — or an XML error, uncompressed.

use backon::Retryable;
use chrono::NaiveDate;
use paystream_engine::payments::bills::BillOutcome;
use paystream_engine::payments::gateway::GatewayError;
use reqwest::header::CONTENT_TYPE;

use super::{Failure, V2Client};
use crate::client::bill;
use crate::v2::request::signed_xml;
use crate::v2::xml;

/// A large merchant's day is tens of MiB: more than the client's 10 s for a call.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl V2Client {
    pub(super) async fn download_bill(&self, date: NaiveDate) -> Result<BillOutcome, GatewayError> {
        let bill_date = date.format("%Y%m%d").to_string();
        let fields = self.fields(&[
            ("bill_date", &bill_date),
            ("bill_type", "ALL"),
            ("tar_type", "GZIP"),
        ]);
        let body = signed_xml(fields, self.config.api_key.expose(), self.config.sign_type)
            .map_err(|e| GatewayError::Unavailable(format!("cannot build the request: {e}")))?;
        let attempt = || self.post_once("/pay/downloadbill", &body);
        let answer = attempt
            .retry(crate::client::retry_policy())
            .when(|f| matches!(f, Failure::Transient(_)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "WeChat Pay v2 bill download failed; retrying with the same request"))
            .await
            .map_err(Failure::into_error)?;
        let text = bill::unpack(answer)?;
        if is_xml(&text) {
            return refusal(&text);
        }
        bill::read_blocking(date, text, None).await
    }

    /// One POST whose answer is taken raw (not read as a v2 answer).
    async fn post_once(&self, path: &str, body: &str) -> Result<Vec<u8>, Failure> {
        let transient = |e: reqwest::Error| {
            Failure::Transient(GatewayError::Unavailable(e.without_url().to_string()))
        };
        let url = format!("{}{path}", self.config.api_base.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .timeout(DOWNLOAD_TIMEOUT)
            .body(body.to_string())
            .send()
            .await
            .map_err(transient)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transient)?;
        if !status.is_success() {
            // APIv2 answers 200 whatever the outcome: anything else is a proxy's or an outage.
            return Err(Failure::Transient(GatewayError::Unavailable(format!(
                "WeChat Pay v2 {path} answered HTTP {status}"
            ))));
        }
        Ok(bytes.to_vec())
    }
}

/// A bill never starts with `<`; WeChat's errors are `<xml>…</xml>`.
fn is_xml(text: &[u8]) -> bool {
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// WeChat's error instead of a bill, e.g. `<xml><return_code>FAIL</return_code><return_msg>No
/// Bill Exist</return_msg><error_code>20002</error_code></xml>`. Read by `return_msg` (the
/// documentation spells one `NO Bill Exist`; WeChat sends `No Bill Exist`): no bill for a day
/// without trade; `Bill Creating`: not made yet (after 10:00 Beijing the next day); a bad date
/// (too far back, or malformed) is final; anything else (`SYSTEMERROR`, gzip trouble at
/// WeChat's) passes. Unsigned, like every v2 FAIL.
fn refusal(text: &[u8]) -> Result<BillOutcome, GatewayError> {
    let fields = xml::parse(text)
        .map_err(|e| GatewayError::Unverified(format!("unreadable bill answer: {e}")))?;
    if fields.get("return_code").map(String::as_str) != Some("FAIL") {
        return Err(GatewayError::Unverified(
            "a bill answer in XML that is not an error".into(),
        ));
    }
    let message = fields.get("return_msg").cloned().unwrap_or_default();
    let code = fields
        .get("error_code")
        .or_else(|| fields.get("err_code"))
        .cloned()
        .unwrap_or_else(|| "FAIL".into());
    let lower = message.to_ascii_lowercase();
    if lower.contains("no bill exist") {
        Ok(BillOutcome::NoBill)
    } else if lower.contains("bill creating") {
        Ok(BillOutcome::NotReady)
    } else if lower.contains("bill_date")
        || lower.contains("bill_type")
        || lower.contains("invalid")
    {
        Err(GatewayError::Rejected { code, message })
    } else {
        Err(GatewayError::Unavailable(format!(
            "WeChat Pay v2 bill: {code}: {message}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(message: &str, code: Option<&str>) -> Vec<u8> {
        let code = code
            .map(|c| format!("<error_code><![CDATA[{c}]]></error_code>"))
            .unwrap_or_default();
        format!("<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{message}]]></return_msg>{code}</xml>\n").into_bytes()
    }

    #[test]
    fn errors_instead_of_a_bill() {
        assert_eq!(
            refusal(&fail("No Bill Exist", Some("20002"))).unwrap(),
            BillOutcome::NoBill
        );
        assert_eq!(
            refusal(&fail("NO Bill Exist", None)).unwrap(),
            BillOutcome::NoBill
        );
        assert_eq!(
            refusal(&fail("Bill Creating", Some("20002"))).unwrap(),
            BillOutcome::NotReady
        );
        assert!(matches!(
            refusal(&fail("invalid bill_date", Some("20001"))),
            Err(GatewayError::Rejected { code, .. }) if code == "20001"
        ));
        assert!(matches!(
            refusal(&fail("CompressGZip Error", None)),
            Err(GatewayError::Unavailable(_))
        ));
        assert!(matches!(
            refusal(b"<xml><return_code>SUCCESS</return_code></xml>"),
            Err(GatewayError::Unverified(_))
        ));
        assert!(is_xml(b"\r\n <xml>"));
        assert!(!is_xml("交易时间,公众账号ID".as_bytes()));
        assert!(!is_xml(b""));
    }
}
