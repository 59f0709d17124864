"""The entry points: expand, certify, expand_many, and the sampled check of a certificate."""
