"""A model and its call arguments turned into one aten graph: validation, recording, the guarded graph cache."""
