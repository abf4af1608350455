//! Small JSON request bodies, read field by field so every 400 names the field that is wrong.

use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON object body; an empty body is an empty object.
pub struct JsonBody(Map<String, Value>);

impl JsonBody {
    /// Parse `bytes`, refusing keys not in `allowed`.
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<JsonBody, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Map::new()));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("body: not valid JSON ({e})")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::BadRequest("body: must be a JSON object".into()));
        };
        if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "{key}: unknown field; expected {}",
                allowed.join(", ")
            )));
        }
        Ok(JsonBody(map))
    }

    /// A field's raw value; `null` counts as absent.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    /// An optional string field.
    pub fn string(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::BadRequest(format!("{field}: must be a string"))),
        }
    }

    /// An optional boolean field.
    pub fn bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::BadRequest(format!(
                "{field}: must be true or false"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn empty_bodies_are_empty_objects_and_bad_ones_name_the_field() {
        let empty = JsonBody::parse(b"  ", &["ref"]).unwrap();
        assert_eq!(empty.string("ref").unwrap(), None);
        let body = JsonBody::parse(br#"{"ref": 1, "force": "yes"}"#, &["ref", "force"]).unwrap();
        assert!(message(body.string("ref").unwrap_err()).starts_with("ref:"));
        assert!(message(body.bool("force").unwrap_err()).starts_with("force:"));
        let unknown = JsonBody::parse(br#"{"colour": 1}"#, &["ref"])
            .err()
            .unwrap();
        assert!(message(unknown).starts_with("colour:"));
        assert!(message(JsonBody::parse(b"[1]", &[]).err().unwrap()).starts_with("body:"));
        assert!(message(JsonBody::parse(b"{", &[]).err().unwrap()).starts_with("body:"));
    }
}
