"""Tokenize faces once on Ray, cache the codes, write and read WebDataset shards."""
