@echo off
rem Start Patina without a console window, from the virtual environment made by install-windows.bat.
rem Arguments are passed on (none opens the window).
setlocal
set "APP_DIR=%~dp0.."
set "PYW=%APP_DIR%\.venv\Scripts\pythonw.exe"
if not exist "%PYW%" (
    echo Patina is not installed yet. Run "%~dp0install-windows.bat" first.
    pause
    exit /b 1
)
start "" "%PYW%" -m gui.launcher %*
