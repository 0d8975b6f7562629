"""The benchmark's data: the four synthetic defaults as in-memory arrays at one small size (:mod:`.sources`),
the named regimes that change one knob at a time (:mod:`.regimes`), and the split datasets (:mod:`.dataset`)."""
