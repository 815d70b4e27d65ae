"""Pose estimators: each turns an RGB frame into the people it sees, as (V, 3) arrays in its layout."""
