"""Networks: shared layers, discrete and continuous heads, recurrent torsos."""
