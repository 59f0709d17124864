"""A traced graph compiled into one generated function and run; its memory and time estimated before running."""
