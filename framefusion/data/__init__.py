"""Data sets: procedurally generated video question answering."""
