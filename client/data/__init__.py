"""The merchant's data: its validated exports (orders, catalogue), the histories and weekly demand built from
them, splits of real exports into merchants, and generated demo merchants."""
