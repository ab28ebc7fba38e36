"""Vector indexes over the kernels: exact (flat), product quantizer (pq), IVF lists
(ivf), the database's choice among them (vector), filters and the word index."""
