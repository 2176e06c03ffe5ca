"""WinRM over pypsrp: sessions, typed cmdlet calls, error classification."""
