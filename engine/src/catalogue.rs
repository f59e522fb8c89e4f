//! The catalogue: the only source of prices. A client never sends a price; orders are priced here.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{millis, Db};
use crate::error::{Error, ErrorCode, Kind, Result};
use crate::money::Fen;
use crate::order::{OrderLine, MAX_LINES, MAX_ORDER_TOTAL_FEN, MAX_QUANTITY};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_fen: Fen,
    pub active: bool,
}

/// A product as staff submit it, before validation.
#[derive(Clone, Debug, Deserialize)]
pub struct ProductInput {
    pub sku: Option<String>,
    pub name: String,
    pub price_fen: i64,
    #[serde(default = "default_active")]
    pub active: bool,
}

fn default_active() -> bool {
    true
}

/// A line of an order as the customer asked for it: a sku and how many. Unknown fields (a
/// `price_fen` from a client that believes it sets prices) are refused, not ignored.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: i64,
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ProductInput {
    fn validate(self, sku: &str) -> Result<Product> {
        if !valid_sku(sku) {
            return Err(Error::invalid(
                ErrorCode::InvalidSku,
                "sku must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        if self.sku.as_deref().is_some_and(|s| s != sku) {
            return Err(Error::invalid(
                ErrorCode::SkuMismatch,
                "the sku in the body differs from the one in the path",
            ));
        }
        let name = self.name.trim().to_string();
        // WeChat Pay's `description` holds at most 127 characters and is built from names.
        if name.is_empty() || name.chars().count() > 127 {
            return Err(Error::invalid(
                ErrorCode::InvalidName,
                "name must be 1-127 characters",
            ));
        }
        let price_fen = Fen::new(self.price_fen)
            .filter(|p| p.get() > 0 && p.get() <= MAX_ORDER_TOTAL_FEN)
            .ok_or_else(|| {
                Error::invalid(
                    ErrorCode::InvalidPrice,
                    format!("price_fen must be between 1 and {MAX_ORDER_TOTAL_FEN}"),
                )
            })?;
        Ok(Product {
            sku: sku.to_string(),
            name,
            price_fen,
            active: self.active,
        })
    }
}

fn decode(row: &AnyRow) -> Result<Product> {
    let price: i64 = row.try_get("price_fen")?;
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price_fen: Fen::new(price).unwrap_or_default(),
        active: row.try_get::<i64, _>("active")? != 0,
    })
}

#[derive(Clone)]
pub struct Catalogue {
    db: Db,
}

impl Catalogue {
    pub fn new(db: Db) -> Catalogue {
        Catalogue { db }
    }

    pub async fn list(&self, active_only: bool) -> Result<Vec<Product>> {
        let sql = if active_only {
            "SELECT sku, name, price_fen, active FROM products WHERE active = 1 ORDER BY sku"
        } else {
            "SELECT sku, name, price_fen, active FROM products ORDER BY sku"
        };
        let rows = sqlx::query(sql).fetch_all(&self.db.pool).await?;
        rows.iter().map(decode).collect()
    }

    pub async fn get(&self, sku: &str) -> Result<Option<Product>> {
        let row = sqlx::query("SELECT sku, name, price_fen, active FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn create(&self, input: ProductInput) -> Result<Product> {
        let sku = input.sku.clone().unwrap_or_default();
        let product = input.validate(&sku)?;
        let now = millis(Utc::now());
        let inserted = sqlx::query(
            "INSERT INTO products (sku, name, price_fen, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_fen.get())
        .bind(i64::from(product.active))
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::new(
                Kind::Conflict,
                ErrorCode::ProductExists,
                format!("a product with sku {} already exists", product.sku),
            ));
        }
        Ok(product)
    }

    /// Creates or replaces the product at `sku` (PUT semantics).
    pub async fn put(&self, sku: &str, input: ProductInput) -> Result<Product> {
        let product = input.validate(sku)?;
        let now = millis(Utc::now());
        sqlx::query(
            "INSERT INTO products (sku, name, price_fen, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (sku) DO UPDATE SET \
             name = excluded.name, price_fen = excluded.price_fen, active = excluded.active, \
             updated_at = excluded.updated_at",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_fen.get())
        .bind(i64::from(product.active))
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(product)
    }

    /// Prices what the customer asked for. Repeated skus are merged into one line; anything
    /// unknown, inactive or out of range is refused before a single event is written.
    pub async fn price(&self, requested: &[LineRequest]) -> Result<Vec<OrderLine>> {
        if requested.is_empty() {
            return Err(Error::invalid(
                ErrorCode::EmptyOrder,
                "an order needs at least one item",
            ));
        }
        let mut quantities: BTreeMap<&str, u32> = BTreeMap::new();
        for line in requested {
            if !valid_sku(&line.sku) {
                return Err(Error::invalid(
                    ErrorCode::InvalidSku,
                    "sku must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
            let quantity = u32::try_from(line.quantity)
                .ok()
                .filter(|q| (1..=MAX_QUANTITY).contains(q))
                .ok_or_else(|| {
                    Error::invalid(
                        ErrorCode::InvalidQuantity,
                        format!(
                            "quantity of {} must be between 1 and {MAX_QUANTITY}",
                            line.sku
                        ),
                    )
                })?;
            let total = quantities.entry(line.sku.as_str()).or_default();
            *total = total.saturating_add(quantity);
            if *total > MAX_QUANTITY {
                return Err(Error::invalid(
                    ErrorCode::InvalidQuantity,
                    format!("quantity of {} must be at most {MAX_QUANTITY}", line.sku),
                ));
            }
        }
        if quantities.len() > MAX_LINES {
            return Err(Error::invalid(
                ErrorCode::TooManyLines,
                format!("an order holds at most {MAX_LINES} different items"),
            ));
        }
        let mut lines = Vec::with_capacity(quantities.len());
        for (sku, quantity) in quantities {
            let product = self.get(sku).await?.ok_or_else(|| {
                Error::new(
                    Kind::Rule,
                    ErrorCode::UnknownSku,
                    format!("no product has sku {sku}"),
                )
            })?;
            if !product.active {
                return Err(Error::new(
                    Kind::Rule,
                    ErrorCode::ProductInactive,
                    format!("{sku} is not for sale at the moment"),
                ));
            }
            lines.push(OrderLine::priced(
                product.sku,
                product.name,
                quantity,
                product.price_fen,
            )?);
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, price: i64) -> ProductInput {
        ProductInput {
            sku: None,
            name: name.into(),
            price_fen: price,
            active: true,
        }
    }

    #[test]
    fn product_input_is_validated() {
        assert!(input("Tea", 100).validate("tea-1").is_ok());
        assert_eq!(
            input("Tea", 100).validate("").unwrap_err().code(),
            ErrorCode::InvalidSku
        );
        assert_eq!(
            input("Tea", 100).validate("tea 1").unwrap_err().code(),
            ErrorCode::InvalidSku
        );
        assert_eq!(
            input("  ", 100).validate("t").unwrap_err().code(),
            ErrorCode::InvalidName
        );
        assert_eq!(
            input("Tea", 0).validate("t").unwrap_err().code(),
            ErrorCode::InvalidPrice
        );
        assert_eq!(
            input("Tea", -5).validate("t").unwrap_err().code(),
            ErrorCode::InvalidPrice
        );
        let long = "名".repeat(128);
        assert_eq!(
            input(&long, 1).validate("t").unwrap_err().code(),
            ErrorCode::InvalidName
        );
        let mut other = input("Tea", 1);
        other.sku = Some("b".into());
        assert_eq!(
            other.validate("a").unwrap_err().code(),
            ErrorCode::SkuMismatch
        );
    }
}
