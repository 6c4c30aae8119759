"""Great Expectations suites over every store table and the gate that runs them."""
