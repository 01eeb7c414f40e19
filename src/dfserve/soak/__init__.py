"""`dfserve soak`: a steady closed-loop load for a long time, judged window by window (`run`, `windows`,
`drift`), shown live and written as soak.json, soak.md and soak.png (`report`)."""
