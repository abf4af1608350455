//! [`CommitId`]: a full commit id as the store keeps it and the deploy code uses it. A leaf.
//!
//! The store's commit columns (`deploys.from_commit`, `to_commit`, `app_state.commit_sha`)
//! read and write it directly, so a commit id is parsed once — when it comes in from a
//! webhook, the API or git — and never converted back and forth between text and
//! [`git2::Oid`] at each use. A value in the database that is not a full commit id fails to
//! read, naming the value, instead of deploying something else.

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};

/// A full SHA-1 commit id. Shown and stored as 40 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(git2::Oid);

impl CommitId {
    /// The first 12 hex digits, for people (`git log --abbrev=12` length).
    pub fn short(&self) -> String {
        let mut hex = self.to_string();
        hex.truncate(12);
        hex
    }
}

/// Not a full commit id: what the text was, and what a commit id looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotACommitId(pub String);

impl fmt::Display for NotACommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a full commit id (40 hex digits)",
            self.0.chars().take(80).collect::<String>()
        )
    }
}

impl std::error::Error for NotACommitId {}

impl FromStr for CommitId {
    type Err = NotACommitId;

    /// Exactly 40 hex digits (either case); anything shorter, longer or else is refused —
    /// unlike [`git2::Oid::from_str`], which takes a prefix and pads it with zeros.
    fn from_str(s: &str) -> Result<CommitId, NotACommitId> {
        if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NotACommitId(s.to_string()));
        }
        git2::Oid::from_str(s)
            .map(CommitId)
            .map_err(|_| NotACommitId(s.to_string()))
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<git2::Oid> for CommitId {
    fn from(id: git2::Oid) -> CommitId {
        CommitId(id)
    }
}

impl From<CommitId> for git2::Oid {
    fn from(id: CommitId) -> git2::Oid {
        id.0
    }
}

impl sqlx::Type<Sqlite> for CommitId {
    fn type_info() -> SqliteTypeInfo {
        <String as sqlx::Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, Sqlite> for CommitId {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        <String as sqlx::Encode<'q, Sqlite>>::encode(self.to_string(), args)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for CommitId {
    fn decode(value: SqliteValueRef<'r>) -> Result<CommitId, BoxDynError> {
        let text = <&str as sqlx::Decode<'r, Sqlite>>::decode(value)?;
        Ok(text.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn only_a_full_hex_id_parses_and_it_prints_as_it_came_in_lowercase() {
        let id: CommitId = HEX.parse().unwrap();
        assert_eq!(id.to_string(), HEX);
        assert_eq!(id.short(), "0123456789ab");
        assert_eq!(HEX.to_uppercase().parse::<CommitId>(), Ok(id));
        // git2 would read a prefix as a zero-padded id: a different commit, silently.
        for bad in [
            "0123456",
            "",
            &format!("{HEX}0"),
            &HEX.replace('a', "g"),
            " 0123",
        ] {
            let err = bad.parse::<CommitId>().unwrap_err();
            assert!(err.to_string().contains("not a full commit id"), "{bad}");
        }
    }

    #[tokio::test]
    async fn it_is_stored_as_text_and_a_bad_value_in_the_database_fails_to_read() {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let id: CommitId = HEX.parse().unwrap();
        let (text, back): (String, CommitId) = sqlx::query_as("SELECT ?1, ?1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!((text.as_str(), back), (HEX, id));
        let bad: Result<(CommitId,), _> = sqlx::query_as("SELECT 'aaaa'").fetch_one(&mut db).await;
        let err = bad.unwrap_err().to_string();
        assert!(err.contains("\"aaaa\" is not a full commit id"), "{err}");
    }
}
