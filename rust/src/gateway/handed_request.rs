//! One request handed to the event loop in process ([`super::in_process`]): its RSGI-shaped scope (the
//! attributes of granian's `RSGIHTTPScope` that pbfast reads, with the same values a request handed over
//! the Unix socket had: HTTP/1.1, the path percent-decoded with invalid UTF-8 replaced, the raw query), its
//! body read whole, and `respond`, which sends the answer back to the waiting native request.
//!
//! Thread-safety: frozen; made and used on the event loop's thread (the reply slot is a mutex all the same).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyBytes;

use std::sync::Arc;

use super::answer_batch::AnswerBatch;
use super::handed_headers::HandedHeaders;
use super::in_process::{Handed, HandedAnswer, Reply};
use super::wire;

#[pyclass(module = "pbfast._native", name = "HandedRequest", frozen)]
pub struct HandedRequest {
    method: Method,
    uri: Uri,
    path: String,
    client: String,
    #[pyo3(get)]
    headers: Py<HandedHeaders>,
    body: Bytes,
    reply: Mutex<Option<Reply>>,
    answers: Arc<AnswerBatch>,
}

impl HandedRequest {
    pub fn new(py: Python<'_>, handed: Handed, answers: Arc<AnswerBatch>) -> PyResult<Self> {
        let Handed { method, uri, headers, body, reply } = handed;
        let path = decode_path(uri.path());
        let client = match headers.get(wire::CLIENT).and_then(|v| v.to_str().ok()) {
            Some(ip) if ip.contains(':') => format!("[{ip}]:0"),
            Some(ip) => format!("{ip}:0"),
            None => "127.0.0.1:0".to_owned(),
        };
        let headers = Py::new(py, HandedHeaders::new(headers))?;
        Ok(HandedRequest { method, uri, path, client, headers, body, reply: Mutex::new(Some(reply)), answers })
    }
}

/// `%XX` decoded, other bytes as they are, then read as UTF-8 with invalid sequences replaced (as granian's
/// scope reads a path).
pub fn decode_path(path: &str) -> String {
    if !path.contains('%') {
        return path.to_owned();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

fn answer_headers(pairs: Vec<(PyBackedStr, PyBackedStr)>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(pairs.len() + 1);
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.append(name, value);
        }
    }
    headers
}

#[pymethods]
impl HandedRequest {
    #[getter]
    fn proto(&self) -> &'static str {
        "http"
    }

    #[getter]
    fn http_version(&self) -> &'static str {
        "1.1"
    }

    #[getter]
    fn scheme(&self) -> &'static str {
        "http"
    }

    #[getter]
    fn method(&self) -> &str {
        self.method.as_str()
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn query_string(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    #[getter]
    fn authority(&self) -> Option<String> {
        None
    }

    /// The client's address as `ip:0` (`[ip]:0` for IPv6), from the hand-over's client header.
    #[getter]
    fn client(&self) -> &str {
        &self.client
    }

    #[getter]
    fn server(&self) -> &'static str {
        "127.0.0.1:0"
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// Whether the client went away before an answer (nobody waits for one).
    #[getter]
    fn cancelled(&self) -> bool {
        self.reply.lock().as_ref().is_none_or(Reply::cancelled)
    }

    /// Whether an answer was given.
    #[getter]
    fn answered(&self) -> bool {
        self.reply.lock().is_none()
    }

    /// Send the answer; false when one was sent already or nobody waits for it.
    fn respond(&self, status: u16, headers: Vec<(PyBackedStr, PyBackedStr)>, body: &[u8]) -> PyResult<bool> {
        let status = StatusCode::from_u16(status).map_err(|_| PyValueError::new_err(format!("invalid status {status}")))?;
        let Some(reply) = self.reply.lock().take() else {
            return Ok(false);
        };
        Ok(reply.send(HandedAnswer { status, headers: answer_headers(headers), body: Bytes::copy_from_slice(body) }))
    }

    /// Queue the answer for its queue's next `flush_answers` (no gateway thread is woken here); true when it is
    /// the first queued since the last flush (the caller arranges one). False too when one was sent already.
    fn respond_later(&self, status: u16, headers: Vec<(PyBackedStr, PyBackedStr)>, body: &[u8]) -> PyResult<bool> {
        let status = StatusCode::from_u16(status).map_err(|_| PyValueError::new_err(format!("invalid status {status}")))?;
        let Some(reply) = self.reply.lock().take() else {
            return Ok(false);
        };
        let answer = HandedAnswer { status, headers: answer_headers(headers), body: Bytes::copy_from_slice(body) };
        Ok(self.answers.push(reply, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_as_granian_reads_them() {
        assert_eq!(decode_path("/t/a/api/x"), "/t/a/api/x");
        assert_eq!(decode_path("/a%2Fb%20c"), "/a/b c");
        assert_eq!(decode_path("/bad%zz%4"), "/bad%zz%4");
        assert_eq!(decode_path("/%E2%82%AC"), "/\u{20ac}");
        assert_eq!(decode_path("/%FF"), "/\u{fffd}");
    }
}
