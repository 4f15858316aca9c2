//! Numbers and times as PocketBase's request logs write them (`created`, `execTime`, `status`), appended to a
//! row's buffer digit by digit. Rust's `format!` machinery (`Formatter`, padding, float printing) was half of a
//! row's formatting in the request log writer (~3,700 of ~7,400 instructions a row, callgrind); these write the
//! same text in a few hundred. Plain Rust, no Python.

/// Appends `value` in decimal.
pub fn push_unsigned(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `value` in decimal, with a `-` when negative.
pub fn push_signed(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_unsigned(out, value.unsigned_abs());
}

/// Appends `value` (0-99) as two digits.
fn push_two(out: &mut Vec<u8>, value: i64) {
    out.push(b'0' + (value / 10) as u8);
    out.push(b'0' + (value % 10) as u8);
}

/// Appends PocketBase's datetime text (`2006-01-02 15:04:05.000Z`, always 24 bytes) of a Unix time in seconds
/// (milliseconds truncated; times outside 1970-9999 are written as its first or last second).
pub fn push_created(out: &mut Vec<u8>, unix_seconds: f64) {
    let unix_seconds = unix_seconds.clamp(0.0, 253_402_300_799.0); // 1970 to 9999: always 24 characters
    let seconds = unix_seconds.floor();
    let millisecond = (((unix_seconds - seconds) * 1000.0) as i64).clamp(0, 999);
    let seconds = seconds as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    push_two(out, year / 100);
    push_two(out, year % 100);
    out.push(b'-');
    push_two(out, month);
    out.push(b'-');
    push_two(out, day);
    out.push(b' ');
    push_two(out, of_day / 3600);
    out.push(b':');
    push_two(out, of_day / 60 % 60);
    out.push(b':');
    push_two(out, of_day % 60);
    out.push(b'.');
    out.push(b'0' + (millisecond / 100) as u8);
    push_two(out, millisecond % 100);
    out.push(b'Z');
}

/// (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// Durations below this many nanoseconds (~11.5 days) have at most 15 significant digits in milliseconds, so the
/// shortest text of their float64 (what Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes) is their exact decimal.
const EXACT_NANOS: f64 = 1e15;

/// Appends a duration in milliseconds as PocketBase writes `execTime`: whole nanoseconds, then Go's shortest
/// float64 text. Below [`EXACT_NANOS`] that is the milliseconds' exact decimal without trailing zeros, written
/// here from the integer; longer (never seen: days) goes through Rust's own shortest float text.
pub fn push_exec_time(out: &mut Vec<u8>, exec_ms: f64) {
    let nanos = (exec_ms.max(0.0) * 1e6).round();
    if nanos >= EXACT_NANOS { // (never NaN: max() takes 0 over NaN)
        let ms = nanos / 1e6;
        out.extend_from_slice(if ms < 1e21 { format!("{ms}") } else { format!("{ms:e}") }.as_bytes());
        return;
    }
    let nanos = nanos as u64;
    push_unsigned(out, nanos / 1_000_000);
    let mut fraction = nanos % 1_000_000;
    if fraction == 0 {
        return;
    }
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    let end = digits.iter().rposition(|&digit| digit != b'0').map_or(0, |last| last + 1);
    out.push(b'.');
    out.extend_from_slice(&digits[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(push: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        push(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The texts as `format!` writes them (what the writer did before): the oracle.
    fn created_by_format(unix_seconds: f64) -> String {
        let unix_seconds = unix_seconds.clamp(0.0, 253_402_300_799.0);
        let seconds = unix_seconds.floor();
        let millisecond = (((unix_seconds - seconds) * 1000.0) as i64).clamp(0, 999);
        let seconds = seconds as i64;
        let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millisecond:03}Z", of_day / 3600, of_day / 60 % 60, of_day % 60)
    }

    fn exec_time_by_format(exec_ms: f64) -> String {
        let ms = (exec_ms.max(0.0) * 1e6).round() / 1e6;
        if ms != 0.0 && !(1e-6..1e21).contains(&ms) {
            return format!("{ms:e}");
        }
        format!("{ms}")
    }

    #[test]
    fn created_matches_the_formatted_text() {
        for moment in [0.0, -5.0, 1e12, 951_782_400.999_9, 1_709_251_199.5, 1_796_601_600.250_4, 253_402_300_799.0] {
            assert_eq!(text(|out| push_created(out, moment)), created_by_format(moment), "{moment}");
        }
        let mut moment = 0.000_7;
        while moment < 253_402_300_799.0 {
            assert_eq!(text(|out| push_created(out, moment)), created_by_format(moment), "{moment}");
            moment = moment * 1.000_37 + 0.001_3;
        }
    }

    #[test]
    fn exec_time_matches_gos_shortest_float_text() {
        for ms in [0.0, -1.0, f64::NAN, 1e-7, 0.000_000_5, 0.000_001, 0.290_230_4, 12.0, 1_234.567_890_1, 0.1, 0.3,
                   999_999_999.999_999, 1e9, 1e10, 1e16, 1e30, f64::INFINITY] {
            assert_eq!(text(|out| push_exec_time(out, ms)), exec_time_by_format(ms), "{ms}");
        }
        let mut ms = 0.000_000_3;
        while ms < 1e13 {
            assert_eq!(text(|out| push_exec_time(out, ms)), exec_time_by_format(ms), "{ms}");
            ms = ms * 1.001_9 + 0.000_000_7;
        }
        for nanos in (0..3_000_000u64).step_by(7) {
            let ms = nanos as f64 / 1e6;
            assert_eq!(text(|out| push_exec_time(out, ms)), exec_time_by_format(ms), "{nanos}");
        }
    }

    #[test]
    fn integers_in_decimal() {
        for value in [0, 7, -7, 200, 404, i64::MAX, i64::MIN, -1_000_000] {
            assert_eq!(text(|out| push_signed(out, value)), value.to_string());
        }
    }
}
