//! What the staff searches share: WHERE conditions with numbered parameters (the same SQL runs on
//! PostgreSQL and SQLite through `sqlx::Any`, which numbers them `$1, $2, …`), and page bounds.

use paystream_engine::db::Db;
use paystream_engine::error::Result;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use crate::orders::Page;

/// A value bound to a search statement.
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// `sql` with `params` bound in order.
pub(crate) fn bind_all<'q>(sql: &'q str, params: &'q [Param]) -> Query<'q, Any, AnyArguments<'q>> {
    params.iter().fold(sqlx::query(sql), |query, p| match p {
        Param::Text(s) => query.bind(s.as_str()),
        Param::Int(i) => query.bind(*i),
    })
}

/// The conditions of a search, joined with AND, and the values they compare with.
#[derive(Default)]
pub(crate) struct Conditions {
    clauses: Vec<String>,
    pub(crate) params: Vec<Param>,
}

impl Conditions {
    /// Adds `clause`, in which `?` stands for `param`.
    pub(crate) fn add(&mut self, clause: &str, param: Param) {
        self.params.push(param);
        self.clauses
            .push(clause.replace('?', &format!("${}", self.params.len())));
    }

    /// `column = value` when a value is given: a blank filter filters nothing.
    pub(crate) fn equals(&mut self, column: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.add(&format!("{column} = ?"), Param::Text(value.to_string()));
        }
    }

    /// `WHERE …`, or nothing when nothing narrows the search.
    pub(crate) fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The most items one page holds.
pub(crate) const MAX_PER_PAGE: u32 = 100;

/// Which page to read, as asked and as served (`page` from 1, at most [`MAX_PER_PAGE`] items).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageBounds {
    pub(crate) page: u32,
    pub(crate) per_page: u32,
}

impl PageBounds {
    pub(crate) fn new(page: u32, per_page: u32) -> PageBounds {
        PageBounds {
            page: page.max(1),
            per_page: per_page.clamp(1, MAX_PER_PAGE),
        }
    }

    /// `LIMIT … OFFSET …` for this page.
    pub(crate) fn limit_sql(&self) -> String {
        let offset = i64::from(self.page - 1) * i64::from(self.per_page);
        format!("LIMIT {} OFFSET {offset}", self.per_page)
    }

    /// The answer: this page's `items` out of `total_items`.
    pub(crate) fn page<T>(&self, total_items: i64, items: Vec<T>) -> Page<T> {
        let per_page = i64::from(self.per_page);
        Page {
            page: self.page,
            per_page: self.per_page,
            total_items,
            total_pages: (total_items + per_page - 1) / per_page,
            items,
        }
    }
}

/// One page of `table`'s rows matching `conditions`, in `order_by`, each decoded with `decode`,
/// and how many match in all: the shape every staff search has.
pub(crate) async fn search_page<T>(
    db: &Db,
    (table, columns): (&str, &str),
    conditions: &Conditions,
    order_by: &str,
    bounds: PageBounds,
    decode: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Page<T>> {
    let where_sql = conditions.where_sql();
    let count_sql = format!("SELECT COUNT(*) AS n FROM {table} {where_sql}");
    let total: i64 = bind_all(&count_sql, &conditions.params)
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    let list_sql = format!(
        "SELECT {columns} FROM {table} {where_sql} ORDER BY {order_by} {}",
        bounds.limit_sql()
    );
    let rows = bind_all(&list_sql, &conditions.params)
        .fetch_all(&db.pool)
        .await?;
    let items = rows.iter().map(decode).collect::<Result<_>>()?;
    Ok(bounds.page(total, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_parameters_in_order() {
        let mut conditions = Conditions::default();
        assert_eq!(conditions.where_sql(), "");
        conditions.equals("status", None);
        conditions.equals("status", Some("paid"));
        conditions.add("at >= ?", Param::Int(5));
        assert_eq!(conditions.where_sql(), "WHERE status = $1 AND at >= $2");
        assert_eq!(conditions.params.len(), 2);
    }

    #[test]
    fn pages_start_at_one_and_hold_at_most_a_hundred() {
        let bounds = PageBounds::new(0, 500);
        assert_eq!(
            bounds,
            PageBounds {
                page: 1,
                per_page: 100
            }
        );
        assert_eq!(bounds.limit_sql(), "LIMIT 100 OFFSET 0");
        assert_eq!(PageBounds::new(3, 0).limit_sql(), "LIMIT 1 OFFSET 2");
        let page = PageBounds::new(2, 20).page(41, vec![()]);
        assert_eq!((page.page, page.per_page, page.total_pages), (2, 20, 3));
        assert_eq!(PageBounds::new(1, 20).page::<()>(0, vec![]).total_pages, 0);
    }
}
