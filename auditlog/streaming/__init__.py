"""Live fan-out (broadcaster) and delivery to streaming destinations."""
