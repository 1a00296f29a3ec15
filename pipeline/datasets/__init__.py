"""Readers for NTU RGB+D 60/120, Penn Action and custom folders."""
