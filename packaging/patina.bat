@echo off
rem Start Patina without a console window, from the virtual environment made by install-windows.bat
rem (next to the app, or in %LOCALAPPDATA%\Patina\venv when the app folder was too deep).
rem Arguments are passed on (none opens the window). When the window cannot start, Patina shows a
rem message box and writes %LOCALAPPDATA%\Patina\launcher.log.
setlocal
set "APP_DIR=%~dp0.."
set "PYW=%APP_DIR%\.venv\Scripts\pythonw.exe"
if not exist "%PYW%" set "PYW=%LOCALAPPDATA%\Patina\venv\Scripts\pythonw.exe"
if not exist "%PYW%" (
    echo Patina is not installed yet. Run "%~dp0install-windows.bat" first.
    pause
    exit /b 1
)
start "" /D "%APP_DIR%" "%PYW%" -m patina.gui.launcher %*
