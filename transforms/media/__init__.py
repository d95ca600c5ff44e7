"""Pure media code, no Beam: sniffing file types, PDF rendering, video decoding, answer
parsing, and the helper process that runs pdfium/poppler/PyAV under time and memory bounds."""
