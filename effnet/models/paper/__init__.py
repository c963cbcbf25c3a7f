"""The paper's tables and measurements, apart from the library: its peers (Tables 2 and 4), parameter and MAC
accounting beside the published numbers, and the Table 4 latency protocol."""
