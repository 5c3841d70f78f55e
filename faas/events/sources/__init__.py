"""One module per kind of event source; each polls its source and calls the router."""
