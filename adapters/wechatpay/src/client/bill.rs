//! What both clients do with a downloaded trade bill: un-gzip it, (v3) check its SHA1, read it
//! with [`crate::bill`] and hand the engine its types. Any doubt is `Unverified`: a bill that
//! does not check out cannot be reconciled against.

use std::io::Read;

use chrono::NaiveDate;
use paystream_engine::money::Fen;
use paystream_engine::payments::bills::{
    BillOutcome, BillPayment, BillRefund, BillRefundState, TradeBill,
};
use paystream_engine::payments::gateway::GatewayError;

use crate::bill;
use sha1::{Digest, Sha1};

/// A bill un-gzipped may not exceed this (a gzip bomb, or far more than a day of any merchant
/// we serve: 100,000 rows are about 40 MiB).
const MAX_BILL_BYTES: u64 = 1 << 30;

/// The bill as text: gzip (asked for with `tar_type=GZIP`; recognised by its magic bytes, as
/// WeChat answers errors uncompressed) is undone, anything else is taken as it is.
pub(crate) fn unpack(body: Vec<u8>) -> Result<Vec<u8>, GatewayError> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(body);
    }
    // A gzip member ends with the uncompressed size (mod 2^32): one allocation of the right size
    // instead of growing (and copying) a buffer of tens of megabytes.
    let size = body
        .last_chunk::<4>()
        .map(|size| u64::from(u32::from_le_bytes(*size)))
        .unwrap_or_default()
        .min(MAX_BILL_BYTES);
    let mut bill = Vec::with_capacity(size as usize + 1);
    flate2::read::MultiGzDecoder::new(body.as_slice())
        .take(MAX_BILL_BYTES + 1)
        .read_to_end(&mut bill)
        .map_err(|e| GatewayError::Unverified(format!("the trade bill does not un-gzip: {e}")))?;
    if bill.len() as u64 > MAX_BILL_BYTES {
        return Err(GatewayError::Unverified(format!(
            "the trade bill is over {MAX_BILL_BYTES} bytes un-gzipped"
        )));
    }
    Ok(bill)
}

/// v3: the bill's digest as `/v3/bill/tradebill` gave it. WeChat documents `hash_value` as the
/// digest of the original bill (原始账单, gzip un-done), in hex.
pub(crate) fn check_hash(
    bill: &[u8],
    hash_type: &str,
    hash_value: &str,
) -> Result<(), GatewayError> {
    if !hash_type.eq_ignore_ascii_case("SHA1") {
        return Err(GatewayError::Unverified(format!(
            "trade bill hash type {hash_type:?} is not SHA1"
        )));
    }
    // RustCrypto's SHA1 uses the CPU's SHA extensions where there are some: on the project's
    // machine three times as fast as ring's for a day's bill (tens of megabytes).
    let digest = hex::encode(Sha1::digest(bill));
    if !digest.eq_ignore_ascii_case(hash_value.trim()) {
        return Err(GatewayError::Unverified(
            "the trade bill does not match its SHA1".into(),
        ));
    }
    Ok(())
}

/// A downloaded bill, as the v3 client treats it: un-gzipped, its SHA1 checked when WeChat gave
/// one, read and checked against its summary. For callers holding a bill file (the
/// reconciliation benchmark, an operator's download).
pub fn read_trade_bill(
    date: NaiveDate,
    download: Vec<u8>,
    sha1_hex: Option<&str>,
) -> Result<TradeBill, GatewayError> {
    let hash = sha1_hex.map(|hex| ("SHA1".to_string(), hex.to_string()));
    match read_download(date, download, hash.as_ref())? {
        BillOutcome::Bill(bill) => Ok(bill),
        other => Err(GatewayError::Unverified(format!("not a bill: {other:?}"))),
    }
}

/// Un-gzip, hash check (`(hash_type, hash_value)` when WeChat gave one), read.
fn read_download(
    date: NaiveDate,
    download: Vec<u8>,
    hash: Option<&(String, String)>,
) -> Result<BillOutcome, GatewayError> {
    let text = unpack(download)?;
    if let Some((hash_type, hash_value)) = hash {
        check_hash(&text, hash_type, hash_value)?;
    }
    read(date, &text)
}

/// [`read_download`] off the async runtime: a day's bill is tens of megabytes (un-gzip, SHA1 and
/// 100,000 rows take about 0.1 s), too long to hold a runtime thread that serves requests.
pub(crate) async fn read_blocking(
    date: NaiveDate,
    download: Vec<u8>,
    hash: Option<(String, String)>,
) -> Result<BillOutcome, GatewayError> {
    tokio::task::spawn_blocking(move || read_download(date, download, hash.as_ref()))
        .await
        .map_err(|e| GatewayError::Unavailable(format!("reading the trade bill: {e}")))?
}

/// Reads a bill (un-gzipped) into the engine's types.
pub(crate) fn read(date: NaiveDate, text: &[u8]) -> Result<BillOutcome, GatewayError> {
    let parsed = bill::read(text).map_err(|e| GatewayError::Unverified(e.to_string()))?;
    let fen = |value: i64| {
        Fen::new(value).ok_or_else(|| GatewayError::Unverified("a negative bill amount".into()))
    };
    let payments = parsed
        .payments
        .into_iter()
        .map(|p| {
            Ok(BillPayment {
                out_trade_no: p.out_trade_no,
                transaction_id: p.transaction_id,
                amount_fen: fen(p.amount_fen)?,
                paid_at: p.at,
            })
        })
        .collect::<Result<_, GatewayError>>()?;
    let refunds = parsed
        .refunds
        .into_iter()
        .map(|r| {
            Ok(BillRefund {
                out_trade_no: r.out_trade_no,
                transaction_id: r.transaction_id,
                out_refund_no: r.out_refund_no,
                refund_id: r.refund_id,
                amount_fen: fen(r.amount_fen)?,
                state: match r.state {
                    bill::BillRefundState::Succeeded => BillRefundState::Succeeded,
                    bill::BillRefundState::Processing => BillRefundState::Processing,
                    bill::BillRefundState::Failed => BillRefundState::Failed,
                },
                at: r.at,
            })
        })
        .collect::<Result<_, GatewayError>>()?;
    tracing::info!(%date, rows = parsed.rows, "WeChat Pay trade bill read and checked against its summary");
    Ok(BillOutcome::Bill(TradeBill {
        date,
        payments,
        refunds,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const BILL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
        `2026-12-01 08:35:41,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`CMB_DEBIT,`CNY,`25.00,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡,`,`0.15000,`0.60%,`25.00,`0.00,`\r\n\
        `2026-12-01 20:53:36,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMB_DEBIT,`CNY,`0.00,`0.00,`50000408942026120107145868882,`RF20261201000001,`5.00,`0.00,`ORIGINAL,`PROCESSING,`咖啡,`,`-0.03000,`0.60%,`0.00,`5.00,`\r\n\
        总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
        `2,`25.00,`5.00,`0.00,`0.12000,`25.00,`5.00\r\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
    }

    #[test]
    fn gzip_is_undone_and_plain_text_kept() {
        assert_eq!(unpack(gzip(BILL.as_bytes())).unwrap(), BILL.as_bytes());
        assert_eq!(unpack(BILL.as_bytes().to_vec()).unwrap(), BILL.as_bytes());
        // A gzip cut short is not a bill.
        let mut cut = gzip(BILL.as_bytes());
        cut.truncate(cut.len() - 10);
        assert!(matches!(unpack(cut), Err(GatewayError::Unverified(_))));
    }

    #[test]
    fn the_sha1_is_of_the_bill_itself_in_any_case() {
        let hash = hex::encode(Sha1::digest(BILL.as_bytes()));
        check_hash(BILL.as_bytes(), "SHA1", &hash).unwrap();
        check_hash(BILL.as_bytes(), "sha1", &hash.to_uppercase()).unwrap();
        let mut altered = BILL.as_bytes().to_vec();
        altered[300] ^= 1;
        assert!(matches!(
            check_hash(&altered, "SHA1", &hash),
            Err(GatewayError::Unverified(_))
        ));
        assert!(matches!(
            check_hash(BILL.as_bytes(), "MD5", &hash),
            Err(GatewayError::Unverified(_))
        ));
    }

    #[test]
    fn a_bill_reads_into_the_engine_types() {
        let BillOutcome::Bill(bill) =
            read(date(), &unpack(gzip(BILL.as_bytes())).unwrap()).unwrap()
        else {
            panic!("a bill");
        };
        assert_eq!(bill.date, date());
        assert_eq!(bill.payments.len(), 1);
        assert_eq!(bill.payments[0].amount_fen.get(), 2500);
        assert_eq!(
            bill.payments[0].paid_at.to_rfc3339(),
            "2026-12-01T00:35:41+00:00"
        );
        assert_eq!(bill.refunds[0].amount_fen.get(), 500);
        assert_eq!(bill.refunds[0].state, BillRefundState::Processing);
        let wrong = BILL.replace("`2,`25.00", "`2,`25.01");
        assert!(matches!(
            read(date(), wrong.as_bytes()),
            Err(GatewayError::Unverified(_))
        ));
    }
}
