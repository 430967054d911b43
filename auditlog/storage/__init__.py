"""The only code that speaks SQL. Functions take a connection and never commit:
the caller owns the transaction."""
