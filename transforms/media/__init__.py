"""Pure media code, no Beam: sniffing file types, PDF rendering, blank pages and text
layers, video decoding, and the helper process that runs pdfium/poppler/PyAV under time and
memory bounds."""
