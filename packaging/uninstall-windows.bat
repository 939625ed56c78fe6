@echo off
rem Uninstall Patina: removes the shortcuts, the virtual environment and Patina's cache; keeps your
rem datasets, configs, LoRAs and settings (see packaging\README.md). Double-click this file.
setlocal
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0install-windows.ps1" -Uninstall %*
set "RC=%ERRORLEVEL%"
echo.
pause
exit /b %RC%
