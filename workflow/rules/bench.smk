# placeholder: stage not built yet
