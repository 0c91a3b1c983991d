//! Structured decoders (URL, headers, bodies) feeding the scanner.
